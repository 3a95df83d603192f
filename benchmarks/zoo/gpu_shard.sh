#!/usr/bin/env bash
# Run zoo shard K of N (or shards K1-K2 of N in parallel, one GPU each) within one 9-minute device call.
#   bash benchmarks/zoo/gpu_shard.sh K N [PEERS] [MODELS]        # one H200
#   bash benchmarks/zoo/gpu_shard.sh K1-K2 N [PEERS] [MODELS]    # e.g. 1-8 on nvidia-h200-x8: shard K1+i on GPU i
# MODEL_TIMEOUT (default 300 s): one model's limit. PEERS: comma-separated from eager,compile_dynamic,reduce_overhead (default: all three)
# MODELS: optional comma-separated subset to shard instead of the whole zoo (reruns)
# Writes two files: $OUT/zoo-shard-K-of-N.json (or zoo-shards-K1-K2-of-N.json: every model of the shards,
# whatever its status) and the log beside it. Merge here with: python -m benchmarks.zoo merge FILES...
set -u
SHARDS=${1:?shard index K (1-based) or a range K1-K2}
N=${2:?number of shards N}
PEERS=${3:-eager,compile_dynamic,reduce_overhead}
MODELS=${4:-}
OUT=${OUT:-/tmp/zoo-out}
WORK=$(mktemp -d /tmp/zoo-shard.XXXX)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
# fail at once, not once per model: the GPU image lacks pydantic (carry .whl_pyd and put it on PYTHONPATH)
"$PY" -c "import flexrt.format.schema" 2>/dev/null || { echo "zoo: '$PY' cannot import flexrt (pydantic missing? see benchmarks/zoo/README.md)" >&2; exit 2; }
FIRST=${SHARDS%-*}
LAST=${SHARDS#*-}
if [ "$FIRST" = "$LAST" ]; then TAG="zoo-shard-$FIRST-of-$N"; else TAG="zoo-shards-$FIRST-$LAST-of-$N"; fi
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$NGPU" -ge 1 ] || NGPU=1
# no new model starts after BUDGET s (default 330); a model still running at 500 s is killed (status timeout),
# so the JSON is written before the outer timeout (525 s) and the call ends within 9 minutes
# several shards per GPU share the CPUs: give each process's Inductor a share of the compile workers
PER_GPU=$(( (LAST - FIRST + NGPU) / NGPU ))
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-$(( $(nproc) / (PER_GPU * NGPU) > 1 ? $(nproc) / (PER_GPU * NGPU) : 1 ))}
for K in $(seq "$FIRST" "$LAST"); do
    GPU=$(( (K - FIRST) % NGPU ))
    CUDA_VISIBLE_DEVICES=$GPU FLEXRT_CACHE_DIR="$WORK/cache-$K" timeout 525 "$PY" -m benchmarks.zoo \
        --shard "$K/$N" --out "$WORK/res-$K" --device cuda --in-process --budget "${BUDGET:-330}" --deadline 500 \
        --timeout "${MODEL_TIMEOUT:-300}" --peers "$PEERS" ${MODELS:+--models "$MODELS"} > "$WORK/log-$K" 2>&1 &
done
wait
for K in $(seq "$FIRST" "$LAST"); do echo "=== shard $K/$N"; cat "$WORK/log-$K"; done > "$OUT/$TAG.log"
# every per-model JSON of every shard (written as each model finishes, so a killed shard still reports)
"$PY" - "$WORK" "$OUT/$TAG.json" <<'PY'
import glob, json, sys
rows = []
for path in sorted(glob.glob(sys.argv[1] + "/res-*/*.json")):
    if "/shard-" in path:
        continue
    rows.append(json.load(open(path)))
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print(f"{len(rows)} model results -> {sys.argv[2]}")
PY
echo "zoo $TAG done" | tee -a "$OUT/$TAG.log"
