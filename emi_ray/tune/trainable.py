"""The Ray Tune function trainable: the shared training core, reporting with tune.report.

A plain function trainable that trains in-process, run with `reuse_actors=True`: in Ray 2.60
about 1 s of overhead per trial, against about 20 s for a TorchTrainer per trial (a Train
controller and a worker group each time). Every epoch it reports the core's metrics, among them
`mean_pearson` (this epoch) and `best_mean_pearson` (the best so far: what the search optimises).
Its config is a TrialSpec and the sampled values (trial.py). A spec with `stage1_root`
first gets its stage-I run (pretrained there once per stage1 config, align/aligned_store.py),
then trains stage II on the features mapped by it.
"""

from __future__ import annotations

from typing import Any

from emi_ray.tune.trial import split_config


def train_trial(config: dict[str, Any]) -> None:
    """Runs one trial; resumes from Tune's checkpoint after a restore or a retry."""
    # The trial's process imports the training stack here; the driver, which only hands this
    # function to Tune, does not pay for torch and the models.
    import ray
    import torch
    from ray import tune

    from emi_ray.align.aligned_store import pretrained_run, stage2_features
    from emi_ray.engine.report import quiet_ray_loggers, tune_report
    from emi_ray.train.loop import fit
    from emi_ray.tune.store_cache import cached_store

    quiet_ray_loggers()  # no "Checkpoint successfully created" per epoch
    spec, sampled = split_config(config)
    cfg = spec.config(sampled)
    # A trial given GPUs (--gpus-per-trial) sees them via CUDA_VISIBLE_DEVICES.
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    if spec.stage1_root:
        cfg.stage1.run = str(pretrained_run(cfg, spec.features, spec.stage1_root))
    store = cached_store(stage2_features(cfg, spec.features), cfg.data.max_len)
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        fit(cfg, store, tune_report, device=device)
        return
    with ckpt.as_directory() as d:
        fit(cfg, store, tune_report, resume_from=d, device=device)
