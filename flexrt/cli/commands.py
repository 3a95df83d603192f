"""The CLI's commands: each turns parsed arguments into library calls and prints the result.

torch and the compiler are imported inside each command, after the arguments are parsed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

from flexrt.errors import UsageError

PRECISIONS = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
              "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def _shape(text: str, what: str) -> tuple[int, ...]:
    parts = text.split("x")
    if not text or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{what}: {text!r} is not a shape; write dims joined by 'x', e.g. 1x3x224x224")
    return tuple(int(p) for p in parts)


def parse_input(text: str) -> tuple[str, list[tuple[int, ...]], str]:
    """NAME=MIN/OPT/MAX[:dtype] or NAME=SHAPE[:dtype] -> (name, shapes, dtype name); checked, torch-free."""
    name, eq, rest = text.partition("=")
    if not eq or not name or not rest:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=MIN/OPT/MAX[:dtype], e.g. x=1x3x224x224/8x3x224x224/32x3x224x224")
    shapes_text, _, dtype = rest.partition(":")
    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    shapes = [_shape(s, f"input {name!r}") for s in shapes_text.split("/")]
    if len(shapes) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: give one shape or three (MIN/OPT/MAX), not {len(shapes)}")
    return name, shapes, dtype


def _factory(spec: str) -> Any:
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise UsageError(f"model {spec!r}: give it as MODULE:CALLABLE, e.g. mypkg.models:make_model")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"model {spec!r}: cannot import module {module_name!r} ({e})") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"model {spec!r}: module {module_name!r} has no callable {attr!r}")
    return factory


def _device(name: str | None) -> str | None:
    if name is None:
        return None
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA device; use --device cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: use cpu or cuda")
    return name


def make_inputs(parsed: list[tuple[str, list[tuple[int, ...]], str]]) -> list[Any]:
    """`--input` values (see `parse_input`) -> flexrt Inputs, in order; names must be unique."""
    import torch

    import flexrt

    names = [name for name, _, _ in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--input names must be unique; repeated: {', '.join(repeated)}")
    inputs = []
    for name, shapes, dtype in parsed:
        dt = getattr(torch, dtype)
        if len(shapes) == 1:
            inputs.append(flexrt.Input(shape=shapes[0], dtype=dt, name=name))
        else:
            inputs.append(flexrt.Input(min_shape=shapes[0], opt_shape=shapes[1], max_shape=shapes[2], dtype=dt, name=name))
    return inputs


def inspect_artifact(args: argparse.Namespace) -> int:
    from flexrt.serialize.inspect import describe, render

    info = describe(args.path)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        render(info)
    return 0


def compile_model(args: argparse.Namespace) -> int:
    factory = _factory(args.model)
    device = _device(args.device)
    import torch

    import flexrt

    inputs = make_inputs(args.input)
    precisions = {getattr(torch, PRECISIONS[p]) for p in args.precision or ["float32"]}
    model = factory().eval()
    if device is not None:
        model = model.to(device)
    from flexrt.cli.progress import build_progress

    with build_progress(args.verbose or args.debug):
        compiled = flexrt.compile(model, ir="dynamo", arg_inputs=inputs, enabled_precisions=precisions, device=device)
    flexrt.save(compiled, args.output, arg_inputs=inputs)
    print(f"saved {args.output}")
    return 0


def export_onnx(args: argparse.Namespace) -> int:
    """The model as ONNX over its --input ranges, and the TensorRT command lines for it."""
    factory = _factory(args.model)
    device = _device(args.device)
    from flexrt.interop import onnx
    from flexrt.spec import Profile

    inputs = make_inputs(args.input)
    model = factory().eval()
    if device is not None:
        model = model.to(device)
    outputs = onnx.export_onnx(model, args.output, inputs, names=[i.name for i in inputs])
    profile = Profile()
    for spec in inputs:
        profile[spec.name] = spec.range
    print(f"saved {args.output} (inputs {', '.join(i.name for i in inputs)}; outputs {', '.join(outputs)})")
    print("# on a machine with TensorRT:")
    for line in onnx.trtexec_commands(args.output, [profile]):
        print(line)
    print(onnx.polygraphy_command(args.output, [profile]))
    return 0


def demo(args: argparse.Namespace) -> int:
    device = _device(args.device)
    if args.max_batch < 1:
        raise UsageError(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.embed_dim < 12 or args.embed_dim % 12:
        raise UsageError(f"--embed-dim must be a positive multiple of 12 (the model splits it into 12 heads), got {args.embed_dim}")
    from flexrt.cli.demo import run

    run(device=device, max_batch=args.max_batch, embed_dim=args.embed_dim)
    return 0
