#!/usr/bin/env bash
# Hyper-parameter search on the cluster (Ray Tune + Optuna; one GPU per trial).
#   EMI_FEATURES=/mnt/emi/features EMI_SPACE=full jobs/tune.sh [--trials 64 --concurrency 8 ...]
# Resume a killed search: jobs/tune.sh --resume --out /mnt/emi/runs/tune-full
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
space="${EMI_SPACE:-full}"
exec "$here/_submit.sh" "tune-$space" -- emi-ray tune --space "$space" \
    --features "${EMI_FEATURES:-/mnt/emi/features}" --out "${EMI_RUNS:-/mnt/emi/runs}/tune-$space" \
    --gpus-per-trial "${EMI_GPUS_PER_TRIAL:-1}" "$@"
