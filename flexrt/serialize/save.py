"""`flexrt.save`: a compiled module (or Engine) -> one artifact file, with Torch-TensorRT's arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch.utils._pytree as pytree

from flexrt.errors import InputSpecError
from flexrt.format import write_artifact
from flexrt.runtime import CompiledModule, Engine
from flexrt.trace import normalize_inputs


def _check_save_ranges(module: Any, inputs: Any, arg_inputs: Any, kwarg_inputs: Any, dynamic_shapes: Any) -> None:
    """The shapes given to save must lie in the compiled ranges (flexrt saves the compiled ranges)."""
    engine: Engine = module.engine
    given = arg_inputs if arg_inputs is not None else inputs
    if given is None and not kwarg_inputs:
        return
    flat = normalize_inputs(lambda *a, **k: None, given, None, kwarg_inputs)
    if len(flat.specs) != len(engine.inputs):
        raise InputSpecError(f"save: {len(flat.specs)} inputs given, the compiled model takes {len(engine.inputs)} ({engine.input_names})")
    names = engine.input_names
    for name, spec in zip(names, flat.specs):
        r = spec.range
        lo = [min(p[name].min[d] for p in engine.profiles) for d in range(r.rank)]
        hi = [max(p[name].max[d] for p in engine.profiles) for d in range(r.rank)]
        for d in range(r.rank):
            if r.min[d] < lo[d] or r.max[d] > hi[d]:
                raise InputSpecError(
                    f"save: input {name!r} dim {d}: [{r.min[d]}, {r.max[d]}] is outside the compiled range [{lo[d]}, {hi[d]}]; "
                    "compile with that range first (flexrt saves the ranges it compiled)"
                )
    if dynamic_shapes is None:
        return
    per_input = list(dynamic_shapes.values()) if isinstance(dynamic_shapes, Mapping) else list(dynamic_shapes)
    leaves = pytree.tree_leaves(per_input, is_leaf=lambda x: isinstance(x, Mapping) or x is None)
    for name, spec_map in zip(names, leaves):
        for axis, dim in (spec_map or {}).items():
            lo_d = min(p[name].min[axis] for p in engine.profiles)
            hi_d = max(p[name].max[axis] for p in engine.profiles)
            dmin, dmax = getattr(dim, "min", None), getattr(dim, "max", None)
            if dmax is not None and dmax < 2**31 and (dmax > hi_d or (dmin or 0) < min(lo_d, 2) - 1):
                raise InputSpecError(
                    f"save: dynamic_shapes gives input {name!r} dim {axis} the range [{dmin}, {dmax}], wider than the "
                    f"compiled [{lo_d}, {hi_d}]; compile with that range first"
                )


def save(
    module: Any,
    file_path: str | os.PathLike[str],
    output_format: str = "exported_program",
    inputs: Any = None,
    arg_inputs: Any = None,
    kwarg_inputs: Any = None,
    dynamic_shapes: Any = None,
    retrace: bool = True,
    **kwargs: Any,
) -> None:
    """`flexrt.save`: write a compiled module (or Engine) to one file; arguments as Torch-TensorRT's."""
    if output_format not in ("exported_program", "flexrt"):
        raise InputSpecError(f"save: output_format={output_format!r} is not supported; flexrt writes one archive ('exported_program')")
    if isinstance(module, Engine):
        write_artifact(file_path, module.state, module.options)
        return
    if type(module).__name__ == "TorchCompiledModule":  # by name: serialize does not import the backend
        raise InputSpecError(
            "save: this module runs under torch.compile (ir='torch_compile', or a model compiled in pieces at a "
            "branch on tensor data): dynamo builds its engines per graph at run time, and no artifact holds them. "
            "Compile with ir='dynamo' (rewrite the branch with torch.where / torch.cond first) to get a module "
            "flexrt.save can write"
        )
    if not isinstance(module, CompiledModule):
        raise InputSpecError(
            f"save expects the module returned by flexrt.compile (or a flexrt.Engine), got {type(module).__name__}"
        )
    _check_save_ranges(module, inputs, arg_inputs, kwarg_inputs, dynamic_shapes)
    keep_source = module.on_out_of_range != "error" and module.fallback is not None
    source = module.fallback.exported if keep_source and module.fallback is not None else None
    write_artifact(file_path, module.engine.state, module.engine.options, source)
