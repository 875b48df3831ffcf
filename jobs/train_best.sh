#!/usr/bin/env bash
# Train the best config of a finished search with Ray Train (DDP over the GPU workers).
#   EMI_SPACE=full EMI_WORKERS=4 jobs/train_best.sh [--set train.epochs=40 ...]
# A lost node restarts the worker group from the last checkpoint (FailureConfig);
# resume a killed job with: jobs/train_best.sh --resume
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
space="${EMI_SPACE:-full}"
runs="${EMI_RUNS:-/mnt/emi/runs}"
exec "$here/_submit.sh" "train-best-$space" -- emi-ray train --best --from "$runs/tune-$space" \
    --features "${EMI_FEATURES:-/mnt/emi/features}" --out "$runs/train-best-$space" \
    --workers "${EMI_WORKERS:-2}" --gpus-per-worker "${EMI_GPUS_PER_WORKER:-1}" "$@"
