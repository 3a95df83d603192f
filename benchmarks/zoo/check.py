"""Compile one zoo model with flexrt and check it against eager at five shapes, three calls each.

The calls at a shape: the first, a second with the same tensors (on CUDA the engine captures a CUDA
graph there), and a third with freshly allocated random inputs (a replay at new addresses). Each is
compared with the float32 eager model on the same inputs: relative L2 error of every float output.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
import torch.utils._pytree as pytree

from benchmarks.zoo.spec import ZooModel

logger = logging.getLogger(__name__)


def leaves(out: Any) -> list[torch.Tensor]:
    """Every tensor of a model output (transformers' ModelOutput is a pytree node)."""
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def max_rel_error(out: Any, ref: Any) -> float:
    """Largest relative L2 error over the outputs (inf on a shape or count mismatch, or non-finite output)."""
    a, b = leaves(out), leaves(ref)
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        if not (x.is_floating_point() or y.is_floating_point()):
            worst = max(worst, 0.0 if torch.equal(x.cpu(), y.cpu()) else float("inf"))
            continue
        x, y = x.detach().float().cpu(), y.detach().float().cpu()
        finite = torch.isfinite(y)
        if not bool(torch.isfinite(x[finite]).all()):
            return float("inf")
        err = float((x[finite] - y[finite]).norm() / y[finite].norm().clamp_min(1e-12))
        worst = max(worst, err)
    return worst


def to_float32(values: Any) -> Any:
    return pytree.tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, values)


def compile_flexrt(entry: ZooModel, model: torch.nn.Module, dtype: torch.dtype, smoke: bool,
                   device: torch.device, precision: torch.dtype | None = None) -> tuple[Any, float, dict[str, Any]]:
    """flexrt.compile over the entry's ranges (inputs in `dtype`, engines in `precision`, default
    `dtype`): the module, the build seconds and the partition summary."""
    from torch._dynamo.utils import counters

    import flexrt

    args, kwargs = entry.flexrt_inputs(dtype, smoke)
    graphs = counters["stats"]["unique_graphs"]
    start = time.perf_counter()
    compiled = flexrt.compile(model, ir="dynamo", arg_inputs=args, kwarg_inputs=kwargs or None,
                              enabled_precisions={precision or dtype}, device=str(device), **entry.options)
    seconds = time.perf_counter() - start
    segments: dict[str, Any] = {"engine": 0, "torch": 0, "engine_ops": 0, "torch_ops": 0, "torch_reasons": {}}
    parts = compiled_parts(compiled)
    for part in parts:  # a range split by flexrt: the segments of every part
        for seg in part.engine.state.programs[0].segments:  # the partition, as the engine keeps it
            segments[seg.kind] += 1
            segments[f"{seg.kind}_ops"] += sum(seg.ops.values())
            if seg.kind == "torch":
                segments["torch_reasons"].update(seg.reasons)
    if hasattr(compiled, "parts"):
        segments["range_split"] = compiled.report.splitlines()[0]
    if not parts:  # compiled in pieces at a data-dependent branch: one engine per dynamo graph
        segments["pieces"] = counters["stats"]["unique_graphs"] - graphs
    return compiled, seconds, segments


def compiled_parts(compiled: Any) -> list[Any]:
    """The CompiledModules behind flexrt.compile's result (several when it split a range)."""
    if hasattr(compiled, "parts"):
        return [m for p in compiled.parts for m in compiled_parts(p.module)]
    return [compiled] if hasattr(compiled, "engine") else []


def check_shapes(entry: ZooModel, compiled: Any, reference: torch.nn.Module, dtype: torch.dtype, smoke: bool,
                 device: torch.device, eager: torch.nn.Module | None = None) -> list[dict[str, Any]]:
    """At each of the five shapes: three calls (first, repeat, fresh inputs), each against eager float32.

    `eager` (the model in `dtype`) gives the baseline: eager float16's own error against float32 at the
    first call. A shape is ok when flexrt's error is at most max(rtol, 3 x that baseline): random-weight
    models can overflow float16 (T5) in eager too, which is the model's, not the compiler's."""
    rows = []
    for k, sizes in enumerate(entry.points(smoke)):
        errors = []
        first = entry.make_inputs(sizes, dtype, device, 1000 + k, smoke)
        fresh = entry.make_inputs(sizes, dtype, device, 2000 + k, smoke)
        baseline = 0.0
        for call, (args, kwargs) in enumerate((first, first, fresh)):  # the repeat is captured on CUDA, fresh replays it
            with torch.no_grad():
                out = compiled(*args, **kwargs)
                ref = reference(*to_float32(args), **to_float32(kwargs))
                if call == 0 and eager is not None and dtype != torch.float32:
                    baseline = max_rel_error(eager(*args, **kwargs), ref)
            errors.append(max_rel_error(out, ref))
        bound = max(entry.rtol, 3 * baseline)
        rows.append({"sizes": sizes, "errors": errors, "max_error": max(errors), "eager_error": baseline,
                     "ok": max(errors) <= bound})
    return rows


def recheck_float32(entry: ZooModel, reference: torch.nn.Module, smoke: bool,
                    device: torch.device) -> list[dict[str, Any]]:
    """Compile the float32 model and check it at the five shapes against eager float32: for models
    whose random weights overflow float16 in eager too, where the float16 check cannot fail."""
    compiled, _, _ = compile_flexrt(entry, copy.deepcopy(reference), torch.float32, smoke, device)
    return check_shapes(entry, compiled, reference, torch.float32, smoke, device)


def check_float32_weights_in(precision: torch.dtype, entry: ZooModel, model: torch.nn.Module, smoke: bool,
                             device: torch.device) -> tuple[float, list[dict[str, Any]]]:
    """Torch-TensorRT's usual form: the float32 model compiled with enabled_precisions={precision},
    checked at the five shapes against itself in eager float32. The build seconds and the rows."""
    compiled, seconds, _ = compile_flexrt(entry, model, torch.float32, smoke, device, precision=precision)
    return seconds, check_shapes(entry, compiled, model, torch.float32, smoke, device)


def fp32_reference(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).float().eval()
