#!/usr/bin/env bash
# Submit one emi-ray command as a Ray job:  jobs/_submit.sh NAME -- emi-ray ARGS...
#
# RAY_ADDRESS     the jobs API (default http://127.0.0.1:8265: `ray dashboard cluster.yaml`
#                 forwards it from the head, which binds it to 127.0.0.1 only)
# RAY_AUTH_TOKEN_PATH  the head's token (`ray rsync-down cluster.yaml /home/ubuntu/.ray/auth_token
#                 ~/.ray/emi-cluster-token`); default ~/.ray/auth_token
# EMI_RUNTIME_ENV another runtime_env YAML (default jobs/runtime_env.yaml)
# NO_WAIT=1       print the submission id and return instead of following the logs
set -euo pipefail
name="$1"; shift
[ "${1:-}" = "--" ] && shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"   # without it the CLI sends no token (401)
token_path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "$token_path" ]; then
  echo "_submit.sh: no Ray auth token at $token_path; fetch the head's with" \
       "ray rsync-down cluster.yaml /home/ubuntu/.ray/auth_token $token_path" >&2
  exit 2
fi
id="emi-${name}-$(date +%Y%m%d-%H%M%S)"
args=(--address "$RAY_ADDRESS" --submission-id "$id" --working-dir "$repo"
      --runtime-env "${EMI_RUNTIME_ENV:-$repo/jobs/runtime_env.yaml}")
[ "${NO_WAIT:-0}" = "1" ] && args+=(--no-wait)
echo "submitting $id to $RAY_ADDRESS: $*" >&2
exec ray job submit "${args[@]}" -- "$@"
