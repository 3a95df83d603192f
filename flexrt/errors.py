"""Every error flexrt raises on purpose; each message says what is wrong and what to do."""

from __future__ import annotations


class FlexrtError(Exception):
    """Base class: catch this to handle any flexrt failure."""


class InputSpecError(FlexrtError, ValueError):
    """An `Input`, `Profile` or call argument is malformed (bad shape, range, dtype, rank, device, name)."""


class ShapeOutOfRangeError(InputSpecError):
    """An input's dimension lies outside every compiled profile's range."""


class UnsupportedOpError(FlexrtError):
    """An op cannot be compiled and PyTorch fallback was not allowed (require_full_compilation=True)."""


class CompilationError(FlexrtError):
    """A stage of the pipeline (trace, lower, partition, build) failed; the message names the stage."""


class DataDependentBranchError(CompilationError):
    """torch.export met a Python branch on tensor values. `flexrt.compile` then splits the model there
    with dynamo's graph breaks (the branch runs in PyTorch) unless full compilation was required."""


class RefitError(FlexrtError):
    """New weights cannot be put into a compiled module: another architecture, a missing or reshaped
    weight, or (with verify_output=True) outputs that disagree with the new module's."""


class ArtifactError(FlexrtError):
    """A saved artifact cannot be written or read: missing, truncated, corrupt, or built for another setup."""


class UsageError(FlexrtError):
    """A command-line argument is malformed (shape syntax, `MODULE:CALLABLE`, device)."""


class ServingError(FlexrtError):
    """`flexrt serve` cannot be set up as asked (bad option, Ray missing, an artifact unusable for batching)."""


class OutputEncodingError(FlexrtError):
    """A served model's outputs cannot be written as the request asked (NaN or infinity as JSON numbers): HTTP 500."""


class RequestError(InputSpecError):
    """A served request is malformed (not JSON, missing fields, data that does not match its shape): HTTP 400."""
