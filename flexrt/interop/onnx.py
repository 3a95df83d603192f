"""The model as ONNX with dynamic axes from its Input ranges, and the TensorRT command lines for it.

The export reuses flexrt's trace stage (`flexrt.dynamo.trace`): one `torch.export.Dim` per dynamic
axis over the Input's range, axes the model ties together merged, so the ONNX file's dynamic axes
are exactly the ranges flexrt compiles. Outputs take flexrt's names (dict keys, named-tuple fields,
`output`, `output_0`..), so a Polygraphy comparison of the two matches outputs by name.
Needs `onnx` and `onnxscript` (torch.onnx's dynamo exporter); `onnxruntime` to run the file.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import ExportedProgram

from flexrt.errors import CompilationError, FlexrtError
from flexrt.ir.names import output_names
from flexrt.runtime import Engine
from flexrt.spec import Input, Profile, union_range

logger = logging.getLogger(__name__)


def require(*modules: str) -> None:
    """Fail with the pip line when an optional ONNX package is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise FlexrtError(f"this needs {', '.join(missing)}: pip install {' '.join(missing)} (or pip install 'flexrt[onnx]')")


def engine_inputs(engine: Engine) -> tuple[list[Any], dict[str, Any]]:
    """(arg_inputs, kwarg_inputs) as the engine was traced: one `Input` per input over all its profiles."""
    specs = []
    for spec in engine.inputs:
        r = union_range([p[spec.name] for p in engine.profiles])
        specs.append(Input(min_shape=r.min, opt_shape=r.opt, max_shape=r.max, dtype=spec.dtype, format=spec.format, name=spec.name))
    args, kwargs = pytree.tree_unflatten(specs, engine.state.in_spec)
    return list(args), dict(kwargs)


def export_onnx(
    model: torch.nn.Module | ExportedProgram,
    path: str | os.PathLike[str],
    arg_inputs: Sequence[Any] | None = None,
    kwarg_inputs: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Write `model` as ONNX with a dynamic axis per ranged dim; returns the output names used.

    An `nn.Module` is traced over `arg_inputs`/`kwarg_inputs` (flexrt `Input`s); an
    `ExportedProgram` (an artifact's saved source) keeps its own dims. `names` are the input names,
    in flat order (default: the program's).
    """
    require("onnx", "onnxscript")
    if isinstance(model, ExportedProgram):
        ep = model
    else:
        from flexrt.compiler.api import dynamo_trace

        ep = dynamo_trace(model, arg_inputs=list(arg_inputs or []), kwarg_inputs=dict(kwarg_inputs or {}) or None)
    user_inputs = ep.graph_signature.user_inputs
    outputs = output_names(ep.call_spec.out_spec, len(ep.graph_signature.user_outputs))
    # torch.onnx warns once per torchvision op it cannot register; that is noise for a flexrt user
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(max(level, logging.ERROR))
    try:
        torch.onnx.export(
            ep, (), os.fspath(path), dynamo=True, input_names=list(names or user_inputs), output_names=outputs,
            verbose=False,
        )
    except Exception as e:  # the exporter raises many types; name the stage
        raise CompilationError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        registration.setLevel(level)
    logger.info("wrote %s (inputs %s, outputs %s)", path, list(names or user_inputs), outputs)
    return outputs


def onnxrt_reference(path: str | os.PathLike[str], output_order: Sequence[str]) -> Any:
    """An ONNX Runtime session as a `compare` reference: feeds by input name, outputs by name (else by position)."""
    require("onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    by_name = set(output_order) <= set(outputs)
    if not by_name:
        logger.warning("ONNX outputs %s do not carry flexrt's names %s; matching them by position", outputs, list(output_order))

    def run(feed: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        arrays = {n: feed[n].detach().cpu().numpy() for n in inputs}
        results = dict(zip(outputs, session.run(None, arrays)))
        return results if by_name else dict(zip(output_order, results.values()))

    return run


def _dynamic_names(profiles: Sequence[Profile]) -> list[str]:
    """Inputs with a dim that differs anywhere: the ones TensorRT needs shapes for."""
    names = list(profiles[0])
    return [n for n in names if not union_range([p[n] for p in profiles]).is_static]


def trtexec_commands(onnx_path: str, profiles: Sequence[Profile]) -> list[str]:
    """One `trtexec` line per profile (each builds an engine for that profile, as a flexrt runner uses one)."""
    dynamic = _dynamic_names(profiles)
    lines = []
    for p in profiles:
        flags = "".join(
            f" --{field}Shapes=" + ",".join(f"{n}:{'x'.join(map(str, getattr(p[n], field)))}" for n in dynamic)
            for field in ("min", "opt", "max")
        ) if dynamic else ""
        lines.append(f"trtexec --onnx={onnx_path}{flags}")
    return lines


def polygraphy_command(onnx_path: str, profiles: Sequence[Profile]) -> str:
    """`polygraphy run --trt --onnxrt` with one --trt-min/opt/max-shapes group per profile."""
    dynamic = _dynamic_names(profiles)
    cmd = f"polygraphy run {onnx_path} --trt --onnxrt"
    for p in profiles if dynamic else []:
        for field in ("min", "opt", "max"):
            shapes = " ".join(f"{n}:[{','.join(map(str, getattr(p[n], field)))}]" for n in dynamic)
            cmd += f" --trt-{field}-shapes {shapes}"
    return cmd
