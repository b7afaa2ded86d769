#!/usr/bin/env bash
# A separate virtual environment with the authors' published package (miro-t2i 0.1.4), for
# scripts/record_authors_reference.py. It never touches the project's .venv, and nothing of the authors'
# code enters the project.
#
#   bash scripts/setup_authors_env.sh [DIR]            # default DIR: ../refenvs/miro-t2i
#   REUSE_TORCH_FROM=.venv bash scripts/setup_authors_env.sh DIR
#
# With REUSE_TORCH_FROM, the new environment sees that venv's site-packages through a .pth file (torch,
# diffusers, safetensors, numpy) instead of installing a second torch; only miro-t2i and its small pure-Python
# dependencies are installed into DIR.
set -euo pipefail
DIR="${1:-../refenvs/miro-t2i}"
python3 -m venv "$DIR"
if [[ -n "${REUSE_TORCH_FROM:-}" ]]; then
  SITE="$("$REUSE_TORCH_FROM/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  OWN="$("$DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$SITE" > "$OWN/_reuse_site_packages.pth"
  "$DIR/bin/pip" install --quiet --no-deps "miro-t2i==0.1.4" einops omegaconf "antlr4-python3-runtime==4.9.3" pyyaml
else
  "$DIR/bin/pip" install --quiet "torch==2.14.1" "torchvision==0.29.1"
  "$DIR/bin/pip" install --quiet "miro-t2i==0.1.4"
fi
"$DIR/bin/python" -c "import miro.pipeline; print('miro-t2i ready in $DIR')"
