"""Multi-step commands above train/align/tune/extract: the CLI builds a request and calls these.
Each workflow chains library steps of the layers below (e.g. check a stage-I run, extract, map the
features through its heads); no layer below imports this package."""
