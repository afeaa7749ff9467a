#!/usr/bin/env bash
# The GPU evidence on a machine with its own python3 and torch, no uv, no network (issue 14):
#   benchmarks/gpu/run.sh OUT_DIR [evidence.py options, e.g. --budget 420]
# Writes OUT_DIR/evidence.json, evidence.md, memory.png and log.txt. See evidence.py.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: benchmarks/gpu/run.sh OUT_DIR [options]}
shift
mkdir -p "$out"
PYTHONPATH=$(printf '%s:' "$PWD"/packages/*/src)${PYTHONPATH:-}
export PYTHONPATH PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-16}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} | tee "$out/log.txt"
python3 benchmarks/gpu/evidence.py --out "$out" "$@" 2>&1 | tee -a "$out/log.txt"
