"""`flexrt run`: flexrt against eager PyTorch (and ONNX Runtime) over every profile, as `polygraphy run --trt --onnxrt`.

For a model (`MODULE:FACTORY` with `--input` ranges) flexrt compiles it first; for an artifact the
reference is its saved source program, or `--model` when it kept none. Each profile runs at min, opt,
max and `--random-shapes` random in-range shapes on fresh random data; the table shows each output's
largest absolute and relative error and the shapes that produced them. Exit 1 when any element is
beyond both atol and rtol (Polygraphy's element-wise rule), 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from typing import Any

from flexrt.errors import UsageError

logger = logging.getLogger(__name__)

EXIT_MISMATCH = 1


def add_parser(sub: Any) -> None:
    """Register `flexrt run` (torch-free: only argparse here)."""
    from flexrt.cli.commands import parse_input

    p = sub.add_parser("run", help="compare flexrt with eager PyTorch (and ONNX Runtime) at every profile's shapes")
    p.add_argument("target", help="MODULE:FACTORY (with --input) or an artifact path (.ep)")
    p.add_argument("--input", action="append", default=None, type=parse_input,
                   help="NAME=MIN/OPT/MAX[:dtype] or NAME=SHAPE[:dtype], as for compile (a model only)")
    p.add_argument("--model", default=None,
                   help="MODULE:FACTORY to compare an artifact with, when it was saved without its source program")
    p.add_argument("--random-shapes", type=int, default=3, help="random in-range shapes per profile (default 3)")
    p.add_argument("--onnxrt", action="store_true", help="also compare with ONNX Runtime on the model exported to ONNX")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: by precision, 1e-4 for float32)")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance (default: by precision, 1e-4 for float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda, for a model (default: cuda when available)")
    p.set_defaults(fn=run)


def _tolerance(engine: Any, atol: float | None, rtol: float | None) -> tuple[float, float]:
    import torch

    from flexrt.tf32 import TF32_TOLERANCE

    dtype = engine.settings.engine_dtype
    default = {torch.float16: 1e-2, torch.bfloat16: 2e-2}.get(dtype, 1e-4)
    if dtype == torch.float32 and engine.device.type == "cuda" and not engine.settings.disable_tf32:
        default = TF32_TOLERANCE
    return (default if atol is None else atol), (default if rtol is None else rtol)


def _check_args(args: argparse.Namespace) -> bool:
    """Argument mistakes as UsageError before anything is imported; True when the target is an artifact."""
    if args.random_shapes < 0:
        raise UsageError(f"--random-shapes must be >= 0, got {args.random_shapes}")
    for flag, value in (("--atol", args.atol), ("--rtol", args.rtol)):
        if value is not None and not value >= 0:
            raise UsageError(f"{flag} must be >= 0, got {value}")
    is_artifact = os.path.isfile(args.target) or args.target.endswith(".ep")
    if is_artifact:
        if not os.path.isfile(args.target):
            raise UsageError(f"artifact {args.target!r} does not exist")
        if args.input:
            raise UsageError("--input is for a MODULE:FACTORY model; an artifact carries its own ranges")
    else:
        if args.model:
            raise UsageError("--model is for an artifact that was saved without its source; give the model as the target")
        if not args.input:
            raise UsageError(f"model {args.target!r}: give its input ranges with --input NAME=MIN/OPT/MAX[:dtype]")
    return is_artifact


def run(args: argparse.Namespace) -> int:
    from flexrt.cli.commands import _device, _factory, make_inputs

    is_artifact = _check_args(args)
    import torch

    import flexrt
    from flexrt.interop.compare import compare, eager_reference, profile_cases

    source: Any  # what the ONNX file is exported from: an nn.Module or the artifact's ExportedProgram
    if is_artifact:
        artifact = flexrt.load(args.target)
        engine = artifact.engine
        if args.model:
            model = _factory(args.model)().eval().to(engine.device)
            source = model
        else:
            fallback = artifact.module().fallback
            if fallback is None:
                raise UsageError(
                    f"{args.target} was saved without its source program (only on_out_of_range='eager'/'build' keep it); "
                    "give the model to compare with: --model MODULE:FACTORY"
                )
            source = fallback.exported
            model = source.module()
    else:
        factory = _factory(args.target)
        device = _device(args.device)
        model = factory().eval()
        if device is not None:
            model = model.to(device)
        inputs = make_inputs(args.input)
        engine = flexrt.compile(model, ir="dynamo", arg_inputs=inputs, device=device).engine
        source = model
    references = {"pytorch": eager_reference(model, engine)}
    with tempfile.TemporaryDirectory(prefix="flexrt-run-") as tmp:
        if args.onnxrt:
            references["onnxrt"] = _onnx_reference(source, engine, os.path.join(tmp, "model.onnx"))
        atol, rtol = _tolerance(engine, args.atol, args.rtol)
        torch.manual_seed(args.seed)
        cases = profile_cases(engine, args.random_shapes, args.seed)
        reports = compare(engine, references, cases, atol=atol, rtol=rtol)
    render(reports, atol, rtol, len(engine.profiles))
    return 0 if all(r.passed for r in reports) else EXIT_MISMATCH


def _onnx_reference(source: Any, engine: Any, path: str) -> Any:
    from torch.export import ExportedProgram

    from flexrt.interop.onnx import engine_inputs, export_onnx, onnxrt_reference

    if isinstance(source, ExportedProgram):
        export_onnx(source, path, names=engine.input_names)
    else:
        args, kwargs = engine_inputs(engine)
        export_onnx(source, path, args, kwargs, names=engine.input_names)
    return onnxrt_reference(path, engine.output_names)


def render(reports: list[Any], atol: float, rtol: float, profiles: int) -> None:
    from rich.table import Table

    from flexrt.console import make_console

    console = make_console()
    table = Table(title=f"flexrt vs reference: {profiles} profile(s), atol={atol:g} rtol={rtol:g}")
    for column in ("reference", "output", "max abs err", "at", "max rel err", "at", "result"):
        table.add_column(column)
    failures = []
    for report in reports:
        for name, err in report.outputs.items():
            at_abs = err.abs_case.describe() if err.abs_case else "-"
            at_rel = err.rel_case.describe() if err.rel_case else "-"
            result = "[green]PASS[/green]" if err.passed else f"[red]FAIL[/red] ({len(err.failed)} of {report.cases})"
            table.add_row(report.reference, name, f"{err.max_abs:.3e}", at_abs, f"{err.max_rel:.3e}", at_rel, result)
            failures += [f"{report.reference} {name}: {line}" for line in err.failed]
    console.print(table)
    for line in failures[:20]:
        console.print(f"  {line}", highlight=False)
    if len(failures) > 20:
        console.print(f"  ... and {len(failures) - 20} more")
    console.print("[green]PASSED[/green]" if not failures else f"[red]FAILED[/red]: {len(failures)} mismatch(es)")
