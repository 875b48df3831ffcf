"""Hyper-parameter search (Ray Tune + Optuna over named search spaces) and the ablation grid.

Modules, bottom to top (each imports only those above it in this list):
distributions (a YAML spec <-> an Optuna distribution), spaces (search-space files),
trial (TrialSpec: what one trial trains), store_cache, trainable (the Tune function),
settings (SearchRequest, SearchSettings, finding a search), study (Optuna: sampler,
searcher, stale trials), events (trial events, the board of trials, progress), experiment (the Tune runs:
fit_search, fit_grid), results (rows and files of a finished search), confirm (top
trials x fresh seeds), ablation (the paper's tables), search (run_search), best (`train --best`).
"""
