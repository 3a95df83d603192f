"""`python -m benchmarks.zoo --shard K/N --out DIR [--models a,b] [--device cuda] [--smoke] [--in-process]`
runs a shard and writes DIR/<model>.json plus DIR/shard-K-of-N.json; `python -m benchmarks.zoo merge DIR...`
writes benchmarks/results/zoo/zoo.{json,md,png}."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from benchmarks.zoo.models import ZOO
from benchmarks.zoo.timing import PEERS


def main(argv: list[str]) -> None:
    if argv[:1] == ["merge"]:
        from benchmarks.zoo.report import merge

        p = argparse.ArgumentParser(prog="python -m benchmarks.zoo merge")
        p.add_argument("inputs", nargs="+", help="shard JSON files or directories of per-model JSON")
        p.add_argument("--results", default="benchmarks/results/zoo")
        p.add_argument("--notes", default="", help="how the run was made (device, peers, concurrency): goes in zoo.md")
        a = p.parse_args(argv[1:])
        merge(a.inputs, a.results, a.notes)
        return
    p = argparse.ArgumentParser(prog="python -m benchmarks.zoo")
    p.add_argument("--shard", default="1/1")
    p.add_argument("--out", required=True)
    p.add_argument("--models", default="", help="comma-separated subset (default: the whole zoo)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="tiny configs and ranges (CPU)")
    p.add_argument("--peers", default=None, help=f"comma-separated from {','.join(PEERS)}; 'none' for no timing")
    p.add_argument("--in-process", action="store_true", help="one process for the shard, restarted after a crash")
    p.add_argument("--timeout", type=float, default=600, help="seconds one model may take")
    p.add_argument("--budget", type=float, default=1e9, help="seconds after which no new model starts")
    p.add_argument("--deadline", type=float, default=1e9, help="seconds after which a running model is killed")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in a.models.split(",") if n]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; the zoo has {', '.join(ZOO)}")
    peers_text = a.peers if a.peers is not None else (",".join(PEERS) if a.device.startswith("cuda") else "eager")
    if a.worker:
        from benchmarks.zoo.worker import main as worker_main

        peers = None if peers_text == "none" else tuple(p for p in peers_text.split(",") if p)
        worker_main(names, a.out, a.device, a.smoke, peers)  # type: ignore[arg-type]
        return
    from benchmarks.zoo.runner import run_shard, shard_models

    chosen = shard_models(a.shard, names or None)
    results = run_shard(chosen, a.out, a.device, a.smoke, peers_text, a.in_process, a.timeout, a.budget, a.deadline)
    k, n = a.shard.split("/")
    path = os.path.join(a.out, f"shard-{k}-of-{n}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    for r in results:
        print(f"{r['model']:32s} {r['status']}", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
