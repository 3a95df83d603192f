#!/bin/bash
# Serving runs on nvidia-h200-x2 (2026-11-30): the load from several client processes, through the
# DeploymentHandle, one and two replicas. Usage: bash research/runs/serve_x2.sh PART
set -u
P="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir"
$P --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD FLEXRT_CACHE_DIR=/tmp/flexrt-cache RAY_USAGE_STATS_ENABLED=0
nvidia-smi -L
case "$1" in
  a)
    timeout 300 python3 -m benchmarks.serve --model resnet50 --via handle --clients 4 \
      --variants flexrt flexrt_nobatch torch_compile --rates 200 400 800 1600 --duration-s 4 --timeout-s 10 \
      --budget-s 270 --out $OUT 2>&1 | grep -v "^\s*$" | tail -40
    timeout 200 python3 -m benchmarks.serve --model resnet50 --via handle --clients 4 --replicas 2 \
      --variants flexrt flexrt_nobatch --rates 400 800 1600 3200 --duration-s 4 --timeout-s 10 \
      --budget-s 170 --out $OUT 2>&1 | grep -v "^\s*$" | tail -30 ;;
  b)
    timeout 280 python3 -m benchmarks.serve --model bert --via handle --clients 4 \
      --variants flexrt flexrt_nobatch --rates 200 400 800 1600 --duration-s 4 --timeout-s 10 \
      --budget-s 250 --out $OUT 2>&1 | grep -v "^\s*$" | tail -30
    timeout 250 python3 -m benchmarks.serve --model bert --via handle --clients 4 --replicas 2 \
      --variants flexrt flexrt_nobatch --rates 400 800 1600 3200 --duration-s 4 --timeout-s 10 \
      --budget-s 200 --out $OUT 2>&1 | grep -v "^\s*$" | tail -30 ;;
esac
