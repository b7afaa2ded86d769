#!/usr/bin/env bash
# Record every reference scorer's scores on the committed images and captions (after build.sh).
# Usage: scripts/reference_rewards/record.sh [reward ...]    (default: all six)
# Environment: MIRO_REFENVS, as for build.sh. Writes tests/rewards/reference/records/REWARD.json.
set -euo pipefail
ROOT="${MIRO_REFENVS:-$HOME/.cache/miro-refenvs}"
HERE="$(cd "$(dirname "$0")" && pwd)"
declare -A VENV=([aesthetic]=clip [hpsv2]=clip [pickscore]=clip [sciscore]=clip [imagereward]=ir [vqascore]=t2v)
rewards=("$@")
[[ ${#rewards[@]} -eq 0 ]] && rewards=(aesthetic hpsv2 pickscore sciscore imagereward vqascore)
for reward in "${rewards[@]}"; do
  env="${VENV[$reward]:?unknown reward $reward}"
  [[ -x "$ROOT/$env/bin/python" ]] || { echo "no $ROOT/$env: run build.sh $env first" >&2; exit 1; }
  OMP_NUM_THREADS=1 "$ROOT/$env/bin/python" "$HERE/record.py" "$reward"
done
