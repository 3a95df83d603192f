#!/bin/bash
# Build-time runs on the H200 (2026-11-30). Usage: bash research/runs/build_h200.sh PART
set -u
P="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir"
$P --upgrade --target /tmp/site .whl_pyd/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L; nproc
case "$1" in
  a)
    for m in bert resnet50 vit expand_reshape; do
      timeout 300 python3 -m benchmarks.build_time --models $m --variants flexrt,flexrt_3p,flexrt_warm,torch_compile \
        --peer-shapes opt --out $OUT 2>&1 | grep -v Warning | tail -6
    done ;;
  b)
    timeout 200 python3 -m benchmarks.graph_memory --models resnet50,bert,vit --out $OUT 2>&1 | grep -v Warning | tail -20
    timeout 150 python3 -m benchmarks.build_time --models bert --variants flexrt_3p_seq --peer-shapes opt --out $OUT/seq 2>&1 | tail -3
    timeout 220 python3 -m pytest -q -m cuda -x tests/build/test_workers.py tests/runtime 2>&1 | tail -15 ;;
esac
