#!/usr/bin/env bash
# Feature extraction on the cluster (Ray Data; one encoder actor per GPU worker).
#   EMI_DATA=/mnt/emi/hume EMI_FEATURES=/mnt/emi/features jobs/extract.sh [--preset paper --models models.yaml ...]
# Re-submitting resumes: ids already in the store are skipped.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
exec "$here/_submit.sh" extract -- emi-ray extract "${EMI_DATA:-/mnt/emi/data}" \
    --out "${EMI_FEATURES:-/mnt/emi/features}" "${@:---preset=organiser}"
