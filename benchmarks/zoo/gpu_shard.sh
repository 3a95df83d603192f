#!/usr/bin/env bash
# Run zoo shard K of N on one GPU within one 9-minute device call; the results come back as one file.
#   bash benchmarks/zoo/gpu_shard.sh K N [PEERS] [MODELS]
# PEERS: comma-separated from eager,compile_dynamic,reduce_overhead (default: all three)
# MODELS: optional comma-separated subset to shard instead of the whole zoo (reruns)
# Writes $OUT/zoo-shard-K-of-N.json (every model of the shard, whatever its status) and $OUT/zoo-shard-K-of-N.log.
set -u
K=${1:?shard index K (1-based)}
N=${2:?number of shards N}
PEERS=${3:-eager,compile_dynamic,reduce_overhead}
MODELS=${4:-}
OUT=${OUT:-/tmp/zoo-out}
WORK=$(mktemp -d /tmp/zoo-shard.XXXX)
export FLEXRT_CACHE_DIR="$WORK/cache" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
# no new model starts after BUDGET s (default 330); a model still running at 500 s is killed (status timeout),
# so the JSON is written before the outer timeout (525 s) and the call ends within 9 minutes
timeout 525 "$PY" -m benchmarks.zoo --shard "$K/$N" --out "$WORK/res" --device cuda --in-process \
    --budget "${BUDGET:-330}" --deadline 500 --timeout 300 --peers "$PEERS" ${MODELS:+--models "$MODELS"} \
    > "$OUT/zoo-shard-$K-of-$N.log" 2>&1
rc=$?
if [ -f "$WORK/res/shard-$K-of-$N.json" ]; then
    cp "$WORK/res/shard-$K-of-$N.json" "$OUT/zoo-shard-$K-of-$N.json"
else  # the outer timeout hit: collect what finished
    "$PY" - "$WORK/res" "$OUT/zoo-shard-$K-of-$N.json" <<'PY'
import glob, json, sys
rows = [json.load(open(p)) for p in sorted(glob.glob(sys.argv[1] + "/*.json"))]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
PY
fi
echo "zoo shard $K/$N exit $rc" | tee -a "$OUT/zoo-shard-$K-of-$N.log"
