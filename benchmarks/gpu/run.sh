#!/usr/bin/env bash
# The GPU evidence on a machine with its own python3 and torch, no uv, no network (issue 14):
#   benchmarks/gpu/run.sh OUT_DIR [evidence.py options, e.g. --budget 420]
# Writes OUT_DIR/evidence.json, evidence.md, memory.png and log.txt. See evidence.py.
#
# Liger-Kernel and Cut Cross-Entropy (the fused phase's mdlm-liger and mdlm-cce) are installed
# from wheels carried in benchmarks/gpu/wheels/ if that folder exists (it is git-ignored: copy
# it along with the tree). Fill it on a machine with network access:
#   pip download --no-deps -d benchmarks/gpu/wheels liger-kernel cut-cross-entropy
# Their dependencies (torch, triton) must already be on the GPU machine. A wheel that does not
# install is logged and its head loss reported unavailable; the rest of the evidence runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: benchmarks/gpu/run.sh OUT_DIR [options]}
shift
mkdir -p "$out"
PYTHONPATH=$(printf '%s:' "$PWD"/packages/*/src)${PYTHONPATH:-}
export PYTHONPATH PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-16}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  wheels=benchmarks/gpu/wheels
  if [ -d "$wheels" ]; then
    echo "carried wheels: $(ls "$wheels" | tr '\n' ' ')"
    # One package at a time, so that one that cannot install does not keep the other out.
    for package in liger-kernel cut-cross-entropy; do
      if python3 -m pip install --no-index --find-links "$wheels" "$package" 2>&1 | tail -n 3; then
        echo "installed $package from $wheels"
      else
        echo "could not install $package from $wheels: its head loss will report unavailable"
      fi
    done
  else
    echo "no $wheels folder: mdlm-liger and mdlm-cce run only if already installed"
  fi
} | tee "$out/log.txt"
python3 benchmarks/gpu/evidence.py --out "$out" "$@" 2>&1 | tee -a "$out/log.txt"
