#!/usr/bin/env bash
# Real models on a GPU machine that cannot reach the package registry and takes 64 MiB per call (this workplace's
# device tool): cuts the two GGUF files of the installed model packages into parts that travel one call each, and
# gathers what the device-side set-up (setup.sh) and the distill-option runs (benchmarks/runs/gpu-distill-options.txt) need, under .gpu/ (which
# git must ignore: echo /.gpu/ >> .git/info/exclude).  Then, one call each, while the machine stays warm:
#   carry .gpu/g1 · .gpu/g2 · .gpu/g3 · .gpu/g4 · .gpu/p1 (any command, e.g. ls), and last
#   carry .gpu/p2 .gpu/p3 with:
#   export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/bin:$PATH HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
#   bash .gpu/p3/setup.sh && python3 -m benchmarks runs --runs .gpu/p3/runs.txt --jobs 12 --limit 480 \
#        --pack $OUT/xf.tgz
# Files left on the machine by an earlier call stay while it is warm (30 s after a call).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
SMOL=$($PY -m hf_runtime.local_models smollm2)
GEMMA=$($PY -m hf_runtime.local_models gemma3)
rm -rf .gpu && mkdir -p .gpu/p1 .gpu/p2 .gpu/p3/data .gpu/g1 .gpu/g2 .gpu/g3 .gpu/g4
half=$(( ($(stat -c %s "$SMOL") + 1) / 2 ))
head -c $half "$SMOL" > .gpu/p1/smollm2.part && tail -c +$((half + 1)) "$SMOL" > .gpu/p2/smollm2.part
split -n 4 -d "$GEMMA" .gpu/gemma.
for k in 1 2 3 4; do mv .gpu/gemma.0$((k - 1)) .gpu/g$k/gemma.part; done
sha256sum "$SMOL" | cut -d' ' -f1 > .gpu/p3/smollm2.sha256
sha256sum "$GEMMA" | cut -d' ' -f1 > .gpu/p3/gemma.sha256
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .gpu/p3 "gguf==$($PY -c 'import gguf, importlib.metadata as m; print(m.version("gguf"))')"
cp ../shared/data/uie/{mit-movie_sample300,ET_FindVehicle_sample300,RE_conll04_sample300}.json .gpu/p3/data/
cp benchmarks/gpu/setup.sh .gpu/p3/setup.sh
cp benchmarks/runs/gpu-distill-options.txt .gpu/p3/runs.txt
du -sh .gpu/*
