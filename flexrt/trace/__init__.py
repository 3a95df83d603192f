"""Stage 2, trace: `Input` ranges -> `torch.export` with one `Dim` per dynamic axis -> `TracedProgram`."""

from flexrt.spec.flat import FlatInputs, normalize_inputs
from flexrt.trace.export import (
    InputBinding,
    TracedProgram,
    bind,
    example_inputs,
    specs_from_exported,
    suggested_fixes,
    trace,
    trace_hint,
    user_input_nodes,
)

__all__ = [
    "FlatInputs",
    "InputBinding",
    "TracedProgram",
    "bind",
    "example_inputs",
    "normalize_inputs",
    "specs_from_exported",
    "suggested_fixes",
    "trace",
    "trace_hint",
    "user_input_nodes",
]
