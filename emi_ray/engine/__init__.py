"""What every training run shares, whichever stage it trains.

`runtime` (seeding, threads, divergence), `report` (the per-epoch callback and its Ray
Train / Ray Tune adapters), `checkpoints` (save each epoch, resume, prune), `rundir`
(run directories and their exists/resume guard, Ray storage), `outputs` (metrics.json,
history.csv, curve.png) and `torch_run` (one TorchTrainer set-up, driver and worker side).
Stage II (train/) and stage I (align/) keep only their data, model and step code.
"""
