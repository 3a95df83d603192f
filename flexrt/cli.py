"""`flexrt inspect | compile | demo | bench`: each subcommand calls the library and prints."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from flexrt.errors import FlexrtError


def _inspect(args: argparse.Namespace) -> int:
    from flexrt.inspect import describe, render

    info = describe(args.path)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        render(info)
    return 0


def _parse_input(text: str) -> object:
    """NAME=MIN/OPT/MAX[:dtype] with shapes as 1x3x224x224, or NAME=SHAPE[:dtype] for a static input."""
    import torch

    import flexrt

    name, _, rest = text.partition("=")
    if not rest:
        raise FlexrtError(f"--input {text!r}: expected NAME=MIN/OPT/MAX[:dtype], e.g. x=1x3x224x224/8x3x224x224/32x3x224x224")
    shapes, _, dtype = rest.partition(":")
    parts = [tuple(int(d) for d in s.split("x")) for s in shapes.split("/")]
    dt = getattr(torch, dtype) if dtype else torch.float32
    if len(parts) == 1:
        return flexrt.Input(shape=parts[0], dtype=dt, name=name)
    if len(parts) != 3:
        raise FlexrtError(f"--input {text!r}: give one shape or three (min/opt/max)")
    return flexrt.Input(min_shape=parts[0], opt_shape=parts[1], max_shape=parts[2], dtype=dt, name=name)


def _compile(args: argparse.Namespace) -> int:
    import torch

    import flexrt

    module_name, _, attr = args.model.partition(":")
    if not attr:
        raise FlexrtError("model must be given as MODULE:CALLABLE, e.g. mypkg.models:make_model")
    sys.path.insert(0, os.getcwd())
    factory = getattr(importlib.import_module(module_name), attr)
    model = factory().eval()
    inputs = [_parse_input(t) for t in args.input]
    precisions = {getattr(torch, p) for p in args.precision}
    compiled = flexrt.compile(model, ir="dynamo", arg_inputs=inputs, enabled_precisions=precisions)
    flexrt.save(compiled, args.output, arg_inputs=inputs)
    print(f"saved {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from flexrt.demo import run

    run(device=args.device, max_batch=args.max_batch, embed_dim=args.embed_dim)
    return 0


def _bench(args: argparse.Namespace) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "benchmarks")):
        raise FlexrtError("flexrt bench runs the benchmarks/ folder of a source checkout of flexrt; none found here")
    sys.path.insert(0, root)
    bench = importlib.import_module("benchmarks.bench")
    for model in args.model:
        bench.run(model, smoke=args.smoke, device=args.device, out_dir=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexrt", description="Compile PyTorch models for ranges of input shapes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="show an artifact's inputs, outputs, profiles, segments and sizes")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(fn=_inspect)
    p = sub.add_parser("compile", help="compile a model from MODULE:CALLABLE and save it")
    p.add_argument("model", help="MODULE:CALLABLE returning an nn.Module")
    p.add_argument("--input", action="append", required=True, help="NAME=MIN/OPT/MAX[:dtype], shapes like 1x3x224x224")
    p.add_argument("--precision", action="append", default=["float32"], help="float32, float16 or bfloat16")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=_compile)
    p = sub.add_parser("demo", help="compile the seed's ExpandReshapeModel for batch 1..N and compare with eager")
    p.add_argument("--device", default=None)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=768)
    p.set_defaults(fn=_demo)
    p = sub.add_parser("bench", help="run benchmarks/ (source checkout) for the given models")
    p.add_argument("model", nargs="+")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None)
    p.set_defaults(fn=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except FlexrtError as e:
        print(f"flexrt: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
