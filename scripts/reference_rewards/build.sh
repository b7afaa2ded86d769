#!/usr/bin/env bash
# Build the reference reward scorers' virtual environments, OUTSIDE this repository.
#
# Each upstream scorer runs in its own environment with the versions it was published with; nothing of
# their code is copied into this project. Three environments cover the six comparable rewards:
#
#   clip  transformers 4.27.3 (PickScore's README pin; SciScore uses the same recipe), hpsv2 1.2.0,
#         the OpenAI `clip` package (PyPI: openai-clip) for the LAION aesthetic predictor
#   ir    image-reward 1.5 (transformers 4.27.4, its lower bound; timm 0.6.13 and fairscale 0.4.13, its pins)
#   t2v   t2v_metrics 3.0 (transformers 4.49.0 and Pillow 10.0.0, its pins; installed without its ~60 other
#         dependencies, which only its other models need)
#
# Usage: scripts/reference_rewards/build.sh [clip|ir|t2v ...]      (default: all three)
# Environment: MIRO_REFENVS (where the venvs go; default ~/.cache/miro-refenvs), PYTHON (a Python 3.11),
# TORCH_SPEC / TORCHVISION_SPEC (default torch==2.14.1, torchvision==0.29.1: the project's own pins, so that
# the references and the plugins run the same kernels; the pairs must match, a CPU torch with PyPI's
# torchvision fails at import).
# Then: scripts/reference_rewards/record.sh (see docs/rewards.md, "Reference comparison").
set -euo pipefail

ROOT="${MIRO_REFENVS:-$HOME/.cache/miro-refenvs}"
PYTHON="${PYTHON:-python3.11}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:-torchvision==0.29.1}"
COMMON=("setuptools>=77,<81" numpy==1.26.4 safetensors "huggingface_hub<1.0" sentencepiece==0.2.3)

make_venv() {  # make_venv NAME: a fresh venv with torch, returns nothing; prints its path
  local dir="$ROOT/$1"
  if [[ ! -x "$dir/bin/python" ]]; then
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install --quiet --upgrade "pip<25" "setuptools>=77,<81" wheel
  fi
  "$dir/bin/pip" install --quiet "$TORCH_SPEC" "$TORCHVISION_SPEC"
}

build_clip() {
  make_venv clip
  "$ROOT/clip/bin/pip" install --quiet "$TORCH_SPEC" "$TORCHVISION_SPEC" "${COMMON[@]}" \
    transformers==4.27.3 tokenizers==0.13.3 hpsv2==1.2.0 openai-clip==1.0.1 pillow==12.3.0 ftfy regex
  # The hpsv2 1.2.0 wheel lacks the BPE vocabulary its tokenizer opens (a known packaging slip); the clip
  # package ships the identical file (same sha256 as open_clip's).
  local site
  site="$("$ROOT/clip/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  cp "$site/clip/bpe_simple_vocab_16e6.txt.gz" "$site/hpsv2/src/open_clip/bpe_simple_vocab_16e6.txt.gz"
}

build_ir() {
  make_venv ir
  "$ROOT/ir/bin/pip" install --quiet "$TORCH_SPEC" "$TORCHVISION_SPEC" "${COMMON[@]}" \
    image-reward==1.5 transformers==4.27.4 tokenizers==0.13.3 timm==0.6.13 fairscale==0.4.13 \
    openai-clip==1.0.1 pillow==12.3.0 "diffusers==0.21.4" "accelerate==0.21.0" "datasets==2.14.7" "pyarrow<17" "huggingface_hub<0.26"
}

build_t2v() {
  make_venv t2v
  "$ROOT/t2v/bin/pip" install --quiet "$TORCH_SPEC" "$TORCHVISION_SPEC" "${COMMON[@]}" \
    transformers==4.49.0 pillow==10.0.0 opencv-python-headless==4.11.0.86 tqdm "protobuf>=5"
  # Its own pins (torch 2.5.1, xformers, apex, deepspeed, ...) serve its other models; the CLIP-FlanT5 path
  # needs only the packages above.
  "$ROOT/t2v/bin/pip" install --quiet --no-deps t2v_metrics==3.0
}

mkdir -p "$ROOT"
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(clip ir t2v)
for t in "${targets[@]}"; do
  echo "building $ROOT/$t"
  "build_$t"
  "$ROOT/$t/bin/pip" freeze > "$ROOT/$t/freeze.txt"
done
echo "done: ${targets[*]} in $ROOT"
