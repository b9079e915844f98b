#!/usr/bin/env bash
# The GPU check in one call: pytest -m gpu, bench_fuse at paper sizes in bfloat16, bench_scale on one
# GPU and one distill run at the benchmark's budget; figures in OUT/gpu-<device>-<date>.json (default
# benchmarks/results).  Exits 2 at once without CUDA; --smoke runs it on tiny models on the CPU.
#   benchmarks/gpu_check.sh [--out DIR] [--smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
exec "$PY" -m benchmarks.gpu_check "$@"
