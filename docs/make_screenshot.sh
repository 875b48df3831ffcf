#!/usr/bin/env bash
# Re-make docs/optuna-dashboard.png: a real small search, then optuna-dashboard on its study,
# photographed by headless Chromium (Debian: apt-get install chromium).
#
#   docs/make_screenshot.sh [RUN]     RUN: a finished search run directory to show
#                                     (default: run a 16-trial fusion search on the built-in
#                                     synthetic store into a temporary directory, ~3-6 min on 2 cores)
# EMI_RAY (default: emi-ray on PATH), CHROMIUM (default: chromium), OUT (default docs/optuna-dashboard.png)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
emi="${EMI_RAY:-emi-ray}"
chromium="${CHROMIUM:-chromium}"
out="${OUT:-$repo/docs/optuna-dashboard.png}"
run="${1:-}"
if [ -z "$run" ]; then
    run="$(mktemp -d)/tune-fusion"
    # A real search: Optuna TPE + ASHA over the fusion space, 2 trials at a time.
    "$emi" tune --space fusion --trials 16 --max-epochs 6 --concurrency 2 --seed 0 --out "$run"
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
setsid "$emi" dashboard "$run" --port "$port" > "$(dirname "$run")/dashboard.log" 2>&1 &
dash=$!
trap 'kill -INT -- "-$dash" 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/api/studies" > /dev/null && break
    sleep 0.5
done
study="$(curl -sf "http://127.0.0.1:$port/api/studies" |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["study_summaries"][0]["study_id"])')"
# --virtual-time-budget lets the page's JavaScript fetch the study and draw its plots first.
# --no-sandbox: Chromium refuses to run as root with its sandbox.
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,900 \
    --virtual-time-budget=15000 --screenshot="$out" "http://127.0.0.1:$port/dashboard/studies/$study"
echo "wrote $out (study $study of $run)"
