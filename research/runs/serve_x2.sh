#!/bin/bash
# Serving runs on nvidia-h200-x2: the load from several client processes straight to the replicas'
# own ports (direct ingress, past Ray's one proxy process), one and two replicas.
# Usage: bash research/runs/serve_x2.sh PART (a, b, e, f, h-z2: nvidia-h200-x2; c, d: either)   (carry .whl: scripts/ray_wheels.sh)
# The 2026-11-30 attempt of an earlier part (handle path, 4 clients) hung in its clients: no figures.
set -u
P="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir"
$P --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD FLEXRT_CACHE_DIR=/tmp/flexrt-cache RAY_USAGE_STATS_ENABLED=0
nvidia-smi -L
profile() {  # profile NAME RATE ARGS...: py-spy (carried in .whl) on the replica under a fixed load, 15 s, GIL holders only
  timeout 150 python3 -m benchmarks.serve "${@:3}" --rates "$2" --duration-s 25 --warmup-s 3 --out /tmp/prof_$1 > /tmp/prof_$1.log 2>&1 &
  for _ in $(seq 120); do sleep 1; grep -q "warm-up at" /tmp/prof_$1.log && break; done
  sleep 4; /tmp/site/bin/py-spy record --pid "$(pgrep -f ServeReplica | head -1)" --duration 15 --rate 200 --gil --threads \
    --format raw -o ${RESULTS:-$OUT}/pyspy_$1.txt > /dev/null 2>&1
  wait; grep "@" /tmp/prof_$1.log; }
run() { timeout "$1" python3 -m benchmarks.serve "${@:2}" --duration-s ${DURATION:-4} --timeout-s 10 --out ${RESULTS:-$OUT} 2>&1 | grep "@\|deployed\|rror\|highest\|warm-up" | tail -40; }
case "$1" in
  a)  # ResNet-50: one replica (flexrt batched and not, torch.compile), then two
    run 300 --model resnet50 --via direct --clients 4 --variants flexrt flexrt_nobatch torch_compile \
      --rates 200 400 800 1600 --budget-s 270
    run 200 --model resnet50 --via direct --clients 4 --replicas 2 --variants flexrt flexrt_nobatch \
      --rates 400 800 1600 3200 --budget-s 170 ;;
  b)  # BERT, the same
    run 300 --model bert --via direct --clients 4 --variants flexrt flexrt_nobatch torch_compile \
      --rates 200 400 800 1600 --budget-s 270
    run 200 --model bert --via direct --clients 4 --replicas 2 --variants flexrt flexrt_nobatch \
      --rates 400 800 1600 3200 --budget-s 170 ;;
  c)  # nvidia-h200 (16 cores): ResNet-50 with four replicas sharing the one GPU, eight client processes
    run 230 --model resnet50 --via direct --clients 8 --replicas 4 --replicas-per-gpu 4 \
      --variants flexrt flexrt_nobatch --rates 250 500 1000 2000 --budget-s 200 ;;
  d)  # nvidia-h200: four replicas per GPU, each variant's highest rate with p99 <= 50 ms (#22's goals)
    run 560 --model resnet50 --via direct --clients 8 --replicas 4 --replicas-per-gpu 4 \
      --variants flexrt flexrt_nobatch torch_compile --rates 250 --p99-ms 50 --search-steps 6 --budget-s 520 ;;
  e)  # nvidia-h200-x2: one and two GPUs at equal p99 (#23's goal), BERT then ResNet-50, searched to 6%
    for m in bert resnet50; do
      run 140 --model $m --via direct --clients 4 --variants flexrt --rates 100 --p99-ms 100 --search-steps 8 \
        --search-precision 1.06 --budget-s 130
      run 140 --model $m --via direct --clients 4 --replicas 2 --variants flexrt --rates 200 --p99-ms 100 \
        --search-steps 8 --search-precision 1.06 --budget-s 130
    done ;;
  f)  # nvidia-h200-x2: BERT one and two GPUs at equal p99 again, after 6 s of warm-up load (in run e each
      # search's first rate paid new shapes' first calls and captures, so it started from a failed rate).
      # Since its 2026-11-30 run the replicas also warm BERT's request lengths (--warm-up-sizes): rerun it.
    run 140 --model bert --via direct --clients 4 --variants flexrt --rates 100 --warmup-s 6 --p99-ms 100 \
      --search-steps 8 --search-precision 1.06 --budget-s 130
    run 140 --model bert --via direct --clients 4 --replicas 2 --variants flexrt --rates 100 --warmup-s 6 \
      --p99-ms 100 --search-steps 8 --search-precision 1.06 --budget-s 130 ;;
  h)  # nvidia-h200-x2, one of its GPUs (#22): with 32 cores a GPU can take more replicas. Batched with 12
      # replicas (10 ms wait) against unbatched with 8 (unbatched collapsed at 1000/s with 4 on one H200:
      # its batch-1 calls fill the GPU), each at its highest rate with p99 <= 50 ms. (Those unbatched
      # collapses came from the replica's thread-per-request path, fixed before part k.)
    export CUDA_VISIBLE_DEVICES=0
    run 250 --model resnet50 --via direct --clients 12 --replicas 12 --replicas-per-gpu 12 --variants flexrt \
      --batch-wait-ms 10 --rates 1000 --p99-ms 50 --search-steps 6 --budget-s 230
    run 230 --model resnet50 --via direct --clients 12 --replicas 8 --replicas-per-gpu 8 --variants flexrt_nobatch \
      --rates 500 --p99-ms 50 --search-steps 6 --budget-s 210 ;;
  i)  # nvidia-h200-x2, one GPU (#22): unbatched with 4 and with 12 replicas (8 collapsed at 500/s in run h,
      # its batch-1 calls time-slicing the GPU), the same 12 clients, p99 <= 50 ms
    export CUDA_VISIBLE_DEVICES=0
    for r in 4 12; do
      run 150 --model resnet50 --via direct --clients 12 --replicas $r --replicas-per-gpu $r --variants flexrt_nobatch \
        --rates 500 --p99-ms 50 --search-steps 6 --budget-s 100
    done ;;
  j)  # nvidia-h200-x2 (#23): BERT on one and two GPUs again, now that each replica gets every request body
      # (in run f two replicas split the bodies odd/even), 8 clients, 4 s per rate (DURATION=4)
    run 230 --model bert --via direct --clients 8 --variants flexrt --rates 200 --warmup-s 6 --p99-ms 100 \
      --search-steps 8 --search-precision 1.06 --budget-s 150
    run 200 --model bert --via direct --clients 8 --replicas 2 --variants flexrt --rates 400 --warmup-s 6 \
      --p99-ms 100 --search-steps 8 --search-precision 1.06 --budget-s 150 ;;
  k)  # nvidia-h200-x2, one GPU (#22), after model calls moved to one thread per replica: unbatched with 4
      # and 12 replicas, batched with 12 (10 ms wait), 12 clients, p99 <= 50 ms
    export CUDA_VISIBLE_DEVICES=0
    for r in 4 12; do
      run 130 --model resnet50 --via direct --clients 12 --replicas $r --replicas-per-gpu $r --variants flexrt_nobatch \
        --rates 500 --p99-ms 50 --search-steps 5 --budget-s 90
    done
    run 130 --model resnet50 --via direct --clients 12 --replicas 12 --replicas-per-gpu 12 --variants flexrt \
      --batch-wait-ms 10 --rates 1500 --p99-ms 50 --search-steps 5 --budget-s 90 ;;
  l)  # nvidia-h200-x2 (#23): BERT on one and two GPUs after the model-thread change, shorter (3 s per rate)
    run 150 --model bert --via direct --clients 8 --variants flexrt --rates 300 --warmup-s 4 --p99-ms 100 \
      --search-steps 6 --search-precision 1.06 --budget-s 110
    run 120 --model bert --via direct --clients 8 --replicas 2 --variants flexrt --rates 600 --warmup-s 4 \
      --p99-ms 100 --search-steps 6 --search-precision 1.06 --budget-s 90 ;;
  m)  # nvidia-h200-x2 (#23): BERT on one and two GPUs after the request-path changes (user code on Ray's
      # replica loop, orjson, raw-byte outputs: --binary), 8 clients, 4 s per rate; then the GIL probe
    for r in 1 2; do
      run 150 --model bert --via direct --clients 8 --replicas $r --variants flexrt --rates $((300 * r)) --warmup-s 4 \
        --binary --p99-ms 100 --search-steps 6 --search-precision 1.06 --budget-s 120
    done
    timeout 100 python3 research/probes/gil_release.py --device cuda 2>&1 | tail -2 ;;
  n)  # nvidia-h200-x2: part m's one-GPU BERT search again with room to finish (in m its budget, which counts
      # the first compile, stopped it between 450/s held and 600/s failed); then (#22) ResNet-50 with one
      # replica on one GPU, batched (10 ms wait) and not, p99 <= 50 ms, after the request-path changes
    run 230 --model bert --via direct --clients 8 --variants flexrt --rates 450 --warmup-s 4 \
      --binary --p99-ms 100 --search-steps 6 --search-precision 1.04 --budget-s 210
    export CUDA_VISIBLE_DEVICES=0
    run 300 --model resnet50 --via direct --clients 8 --variants flexrt flexrt_nobatch --batch-wait-ms 10 \
      --rates 400 --p99-ms 50 --search-steps 6 --search-precision 1.06 --budget-s 280 ;;
  o)  # nvidia-h200-x2 (#23): ResNet-50 on one and two GPUs after the request-path changes (run e's searches,
      # 8 clients); then (#22) py-spy on a one-GPU ResNet-50 replica, batched (380/s) and not (500/s)
    for r in 1 2; do
      run 160 --model resnet50 --via direct --clients 8 --replicas $r --variants flexrt --rates $((300 * r)) --warmup-s 4 \
        --p99-ms 100 --search-steps 6 --search-precision 1.06 --budget-s 140
    done
    export CUDA_VISIBLE_DEVICES=0
    profile batched 380 --model resnet50 --via direct --clients 8 --variants flexrt --batch-wait-ms 10
    profile nobatch 500 --model resnet50 --via direct --clients 8 --variants flexrt_nobatch ;;
  p)  # nvidia-h200-x2 (#23): BERT and ResNet-50 on one and two GPUs with httptools carried (ray[serve]'s
      # uvicorn[standard] brings it; runs a-o lacked it, so uvicorn parsed HTTP in pure Python, h11)
    python3 -c "import httptools, uvloop, orjson; print('httptools', httptools.__version__, 'uvloop', uvloop.__version__, 'orjson', orjson.__version__)"
    for m in bert resnet50; do
      run 140 --model $m --via direct --clients 8 --variants flexrt --rates 450 --warmup-s 4 --binary \
        --p99-ms 100 --search-steps 5 --search-precision 1.06 --budget-s 125
      run 115 --model $m --via direct --clients 8 --replicas 2 --variants flexrt --rates 900 --warmup-s 4 --binary \
        --p99-ms 100 --search-steps 5 --search-precision 1.06 --budget-s 100
    done ;;
  q)  # nvidia-h200-x2 (#23): ResNet-50's knee on one and two GPUs at fixed rates, 6 s each (DURATION=6),
      # since its searches in parts o and p met intermittent tails (two GPUs: 1012.5/s p99 303 ms, 1125/s 188 ms)
    for r in 1 2; do
      run 150 --model resnet50 --via direct --clients 8 --replicas $r --variants flexrt --binary --warmup-s 4 \
        --rates $((480 * r)) $((520 * r)) $((560 * r)) --budget-s 130
    done ;;
  r)  # nvidia-h200-x2, one GPU (#22): two tiers, 8 CPU front ends (HTTP, checks, batching) before one model
      # replica, ResNet-50 batched (10 ms wait) and not, p99 <= 50 ms, 16 client processes; then the single
      # tier (one replica answering HTTP itself) unbatched, on the same host
    export CUDA_VISIBLE_DEVICES=0
    run 320 --model resnet50 --via direct --clients 16 --frontends 8 --variants flexrt flexrt_nobatch --batch-wait-ms 10 \
      --binary --max-requests 24000 --rates 800 --warmup-s 3 --p99-ms 50 --search-steps 6 --search-precision 1.1 --budget-s 300
    run 200 --model resnet50 --via direct --clients 16 --variants flexrt_nobatch --binary --max-requests 24000 --rates 400 \
      --warmup-s 3 --p99-ms 50 --search-steps 5 --search-precision 1.1 --budget-s 180 ;;
  s)  # part r again after the front ends moved to Serve's gRPC transport for the model tier (pickled values,
      # no object store) and the router onto the request loop: 8 front ends batched and not, then 4 batched
    export CUDA_VISIBLE_DEVICES=0
    run 320 --model resnet50 --via direct --clients 16 --frontends 8 --variants flexrt flexrt_nobatch --batch-wait-ms 10 \
      --binary --max-requests 24000 --rates 800 --warmup-s 3 --p99-ms 50 --search-steps 6 --search-precision 1.1 --budget-s 300
    run 220 --model resnet50 --via direct --clients 16 --frontends 4 --variants flexrt --batch-wait-ms 10 \
      --binary --max-requests 24000 --rates 800 --warmup-s 3 --p99-ms 50 --search-steps 6 --search-precision 1.1 --budget-s 200 ;;
  t)  # part s with the front ends' batches overlapping (several at the model tier at once), 8 and 4 front
      # ends batched; errors by status and message now recorded; then the replicas' logged failures
    export CUDA_VISIBLE_DEVICES=0
    for f in 8 4; do
      run 250 --model resnet50 --via direct --clients 16 --frontends $f --variants flexrt --batch-wait-ms 10 \
        --binary --max-requests 24000 --rates 1000 --warmup-s 3 --p99-ms 50 --search-steps 6 --search-precision 1.1 --budget-s 230
    done
    grep -h "failed\|Error" /tmp/ray/session_*/logs/serve/*.log 2>/dev/null | sort | uniq -c | sort -rn | head -20 ;;
  u)  # part s again after the fix of run t's failures (the model replicas' gRPC server refused messages over
      # 4 MiB: a batch of 16 images), one batch at a time per front end as in s: 8 front ends, batched and not
    export CUDA_VISIBLE_DEVICES=0
    run 330 --model resnet50 --via direct --clients 16 --frontends 8 --variants flexrt flexrt_nobatch --batch-wait-ms 10 \
      --binary --max-requests 24000 --rates 800 --warmup-s 3 --p99-ms 50 --search-steps 6 --search-precision 1.1 --budget-s 310
    grep -h "failed\|Error" /tmp/ray/session_*/logs/serve/*.log 2>/dev/null | sort | uniq -c | sort -rn | head -10 ;;
  v)  # the shipped settings (router back in its own loop): 8 front ends, batched, as part u
    export CUDA_VISIBLE_DEVICES=0
    run 250 --model resnet50 --via direct --clients 16 --frontends 8 --variants flexrt --batch-wait-ms 10 \
      --binary --max-requests 24000 --rates 700 --warmup-s 3 --p99-ms 50 --search-steps 5 --search-precision 1.1 --budget-s 210 ;;
  w)  # (#22) where the model tier's ~440 calls/s limit is: 8 front ends batched at a fixed 850/s (30 s), py-spy
      # (GIL holders, then all threads with idle) on the model replica and GIL holders on one front end, CPU per
      # process; then 8 front ends before two model replicas sharing the GPU, batched and not, p99 <= 50 ms
    export CUDA_VISIBLE_DEVICES=0
    mkdir -p /tmp/w
    timeout 170 python3 -m benchmarks.serve --model resnet50 --via direct --clients 16 --frontends 8 --variants flexrt \
      --batch-wait-ms 10 --binary --max-requests 40000 --rates 850 --duration-s 30 --warmup-s 3 --out /tmp/w > /tmp/w/run.log 2>&1 &
    for _ in $(seq 150); do sleep 1; grep -q "warm-up at" /tmp/w/run.log && break; done
    sleep 5
    for pid in $(pgrep -f ServeReplica); do case "$(tr '\0' ' ' < /proc/$pid/cmdline)" in *-model*) M=$pid ;; *) F=$pid ;; esac; done
    S=/tmp/site/bin/py-spy
    $S record --pid "$M" --duration 10 --rate 200 --gil --threads --nonblocking --format raw -o /tmp/w/model_gil.txt > /dev/null 2>&1 & P1=$!
    $S record --pid "$F" --duration 10 --rate 200 --gil --threads --nonblocking --format raw -o /tmp/w/front_gil.txt > /dev/null 2>&1 & P2=$!
    top -b -n 2 -d 3 -w 250 -c > /tmp/w/top.txt; wait $P1 $P2
    $S record --pid "$M" --duration 8 --rate 200 --idle --threads --nonblocking --format raw -o /tmp/w/model_all.txt > /dev/null 2>&1
    wait; grep "@" /tmp/w/run.log; tar czf ${RESULTS:-$OUT}/w_profiles.tgz -C /tmp/w .
    for v in flexrt flexrt_nobatch; do
      run 185 --model resnet50 --via direct --clients 16 --frontends 8 --replicas 2 --replicas-per-gpu 2 --variants $v \
        --batch-wait-ms 10 --binary --max-requests 24000 --rates $([ $v = flexrt ] && echo 1000 || echo 600) --warmup-s 3 \
        --p99-ms 50 --search-steps 5 --search-precision 1.1 --budget-s 165
    done ;;
  x)  # (#22) after the model tier's calls carry numpy arrays (tensors pickled through torch.save cost its event loop
      # 22%), front ends send their calls from the loop (no thread) and the model tier logs no access lines: 8 front
      # ends before two model replicas sharing the GPU, batched and not; then before one model replica, batched
    export CUDA_VISIBLE_DEVICES=0
    for v in flexrt flexrt_nobatch; do
      run 150 --model resnet50 --via direct --clients 16 --frontends 8 --replicas 2 --replicas-per-gpu 2 --variants $v \
        --batch-wait-ms 10 --binary --max-requests 24000 --rates $([ $v = flexrt ] && echo 1750 || echo 825) --warmup-s 3 \
        --p99-ms 50 --search-steps 5 --search-precision 1.1 --budget-s 135
    done
    run 150 --model resnet50 --via direct --clients 16 --frontends 8 --variants flexrt --batch-wait-ms 10 --binary \
      --max-requests 24000 --rates 875 --warmup-s 3 --p99-ms 50 --search-steps 5 --search-precision 1.1 --budget-s 135 ;;
  y)  # (#22) after the model tier merges the calls that wait for its model thread (greedy batching; front ends no
      # longer pad, the model tier does): 8 and 12 front ends before one model replica, batched, then 12 before two
    export CUDA_VISIBLE_DEVICES=0
    for f in 8 12; do
      run 130 --model resnet50 --via direct --clients 16 --frontends $f --variants flexrt --batch-wait-ms 10 --binary \
        --max-requests 24000 --rates 1000 --warmup-s 3 --p99-ms 50 --search-steps 5 --search-precision 1.1 --budget-s 115
    done
    run 130 --model resnet50 --via direct --clients 16 --frontends 12 --replicas 2 --replicas-per-gpu 2 --variants flexrt \
      --batch-wait-ms 10 --binary --max-requests 24000 --rates 1500 --warmup-s 3 --p99-ms 50 --search-steps 5 \
      --search-precision 1.1 --budget-s 115 ;;
  z)  # (#22) the layout of part y's best (12 front ends, two model replicas sharing the GPU): unbatched, batched
      # again, and batched with three model replicas
    export CUDA_VISIBLE_DEVICES=0
    run 125 --model resnet50 --via direct --clients 16 --frontends 12 --replicas 2 --replicas-per-gpu 2 --variants flexrt_nobatch \
      --batch-wait-ms 10 --binary --max-requests 24000 --rates 800 --warmup-s 3 --p99-ms 50 --search-steps 5 \
      --search-precision 1.1 --budget-s 110
    for r in 2 3; do
      run 125 --model resnet50 --via direct --clients 16 --frontends 12 --replicas $r --replicas-per-gpu $r --variants flexrt \
        --batch-wait-ms 10 --binary --max-requests 24000 --rates 2250 --warmup-s 3 --p99-ms 50 --search-steps 5 \
        --search-precision 1.1 --budget-s 110
    done ;;
  z2)  # (#22) the best unbatched layout with this code: twelve single-tier replicas sharing the GPU (run k of the
       # third set held 2000/s with the code then)
    export CUDA_VISIBLE_DEVICES=0
    run 240 --model resnet50 --via direct --clients 16 --replicas 12 --replicas-per-gpu 12 --variants flexrt_nobatch \
      --binary --max-requests 24000 --rates 1500 --warmup-s 3 --p99-ms 50 --search-steps 5 --search-precision 1.1 --budget-s 200 ;;
  z3)  # (#22) BERT (sequence lengths 32-256) in part z's layout, batched and not, p99 <= 100 ms as in its earlier runs
    export CUDA_VISIBLE_DEVICES=0
    for v in flexrt flexrt_nobatch; do
      run 135 --model bert --via direct --clients 16 --frontends 12 --replicas 2 --replicas-per-gpu 2 --variants $v \
        --binary --max-requests 24000 --rates $([ $v = flexrt ] && echo 1200 || echo 600) --warmup-s 4 --p99-ms 100 \
        --search-steps 4 --search-precision 1.15 --budget-s 120
    done ;;
esac
