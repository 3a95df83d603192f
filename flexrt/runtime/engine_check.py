"""Cross-checking a loaded engine against what the manifest says it takes.

A manifest is data anyone can edit (and recompute its checksum for): an input widened from 16 to
32 or declared float64 instead of float32 made the engine read the wrong memory silently. The
engine knows better: AOTInductor compiles a check of every input's dtype, static dims, upper bounds,
static strides and device into the shared object, switched on by AOTI_RUNTIME_CHECK_INPUTS, which
it reads once per library, at its first run. flexrt makes that first run with the variable set, so
the engine's own checks stay on for every later call (defence in depth behind `ShapeChecker`), and
then probes each input with tensors built to fail a *later* check: the error the engine raises
tells whether the manifest's dtype, static dims and maximum sizes are the engine's. No probe runs
the model. Engines whose checks would refuse sizes flexrt serves (a lower bound of 2 where a
profile allows 1: built before flexrt turned `check_lowerbound` off) are not probed, and their
checks stay off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree

from flexrt.errors import ArtifactError
from flexrt.ir.tensor_spec import TensorSpec
from flexrt.runtime.loader import Library
from flexrt.spec import ShapeRange

logger = logging.getLogger(__name__)

CHECK_ENV = "AOTI_RUNTIME_CHECK_INPUTS"
_HAS_CHECKS = CHECK_ENV.encode()  # the variable's name is in every engine whose checks it switches
_LOWER_BOUND = b"dim value is too small at"  # only in engines that check lower bounds
_TRIGGER_DTYPE = torch.complex32  # no engine takes it: its dtype check fails first, before any work
_ENV_LOCK = threading.Lock()
_VERIFIED: dict[tuple[Any, ...], str] = {}  # (library, device, description) -> outcome of the cross-check


@contextlib.contextmanager
def _checking() -> Iterator[None]:
    """AOTI_RUNTIME_CHECK_INPUTS set, and the engine's messages for refused probes (it prints each
    error it raises) kept off stderr, for the few microseconds of the probes."""
    with _ENV_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex32 is "experimental"
        old = os.environ.get(CHECK_ENV)
        os.environ[CHECK_ENV] = "1"
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if old is None:
                del os.environ[CHECK_ENV]
            else:
                os.environ[CHECK_ENV] = old


def call_arity(runner: Any) -> tuple[int, int] | None:
    """(inputs, outputs) as the engine itself declares them, or None where it does not say."""
    try:
        in_spec, out_spec = runner.get_call_spec()
        return pytree.treespec_loads(in_spec).num_leaves, pytree.treespec_loads(out_spec).num_leaves
    except Exception as e:  # noqa: BLE001 - an engine without a readable call spec is only not cross-checked
        logger.debug("engine call spec unreadable: %s", e)
        return None


def _switch_on_checks(runner: Any, library: Library, num_inputs: int, device: torch.device) -> None:
    """Make the library's first run the one that turns its input checks on (see the module doc)."""
    if library.runtime_checks is not None:
        return
    if not library.contains(_HAS_CHECKS) or library.contains(_LOWER_BOUND):
        library.record_runtime_checks(False)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex32 is "experimental"
        trigger = [torch.zeros((), dtype=_TRIGGER_DTYPE, device=device)] * num_inputs
    with _checking():
        try:
            runner.run(trigger)
        except RuntimeError as e:
            if "input_handles[0]: unmatched dtype" not in str(e):
                raise ArtifactError(f"an engine refused its first call unexpectedly ({e}); the file is damaged") from None
        else:
            if num_inputs:
                raise ArtifactError("an engine ran on inputs of a dtype no engine takes; the file is damaged or edited")
    library.record_runtime_checks(True)


def _probe(specs: Sequence[TensorSpec], shapes: Sequence[tuple[int, ...]], k: int, device: torch.device) -> list[torch.Tensor]:
    """Inputs before k valid, input k at its shape with stride 0 (passes the dtype and size checks,
    fails the stride check), input k+1 of a dtype no engine takes."""
    out = [torch.zeros(shape, dtype=s.dtype, device=device) for s, shape in zip(specs[:k], shapes[:k])]
    out.append(torch.zeros((), dtype=specs[k].dtype, device=device).expand(shapes[k]))
    out += [torch.zeros((), dtype=_TRIGGER_DTYPE, device=device)] * (len(specs) - k - 1)
    return out


CHECKED_OK, NARROWER, NOT_CHECKED = "checked", "narrower", "not checked"


def cross_check(runner: Any, library: Library, specs: Sequence[TensorSpec], ranges: Sequence[ShapeRange],
                device: torch.device, where: str) -> str:
    """ArtifactError unless the engine takes `specs` (dtype, static dims) at the ranges' opt sizes.
    Returns CHECKED_OK when its checks stay on, NARROWER when they would refuse sizes up to the
    ranges' max (serve it from a copy without them), NOT_CHECKED when it cannot be checked."""
    if library.runtime_checks is None:
        _switch_on_checks(runner, library, len(specs), device)
    if not library.runtime_checks:
        return NOT_CHECKED
    # AOTInductor steals the handles of a call's inputs and never frees them when it raises: each
    # probe leaks its tensors (a few hundred bytes, and the valid inputs' opt-sized memory). So a
    # library is probed once per description, not once per load.
    key = (library.key, str(device), tuple((s.dtype, s.dims, r.opt, r.max) for s, r in zip(specs, ranges)))
    if key not in _VERIFIED:
        with _checking():
            _VERIFIED[key] = _cross_check(runner, specs, ranges, device, where)
    return _VERIFIED[key]


def _refusal(runner: Any, specs: Sequence[TensorSpec], shapes: Sequence[tuple[int, ...]], k: int,
             device: torch.device) -> str | None:
    """The engine's complaint about input k at shapes[k] (inputs before it at shapes[:k]), or None."""
    passed = (f"input_handles[{k}]: unmatched stride", f"input_handles[{k}]: unmatched device", f"input_handles[{k + 1}]:")
    try:
        runner.run(_probe(specs, shapes, k, device))
    except RuntimeError as e:
        message = str(e).strip()
        return None if any(p in message for p in passed) else message
    return "the engine ran on a probe it should have refused"


def _cross_check(runner: Any, specs: Sequence[TensorSpec], ranges: Sequence[ShapeRange], device: torch.device,
                 where: str) -> str:
    opts = [r.opt for r in ranges]
    for k, spec in enumerate(specs):
        if not ranges[k].max and k == len(specs) - 1:
            continue  # a last 0-d input: nothing fails after its checks
        refused = _refusal(runner, specs, opts, k, device)
        if refused is not None:
            raise ArtifactError(
                f"{where}: the engine does not take input {spec.name!r} as the manifest describes it "
                f"({str(spec.dtype).replace('torch.', '')}, shape {ranges[k].opt} within {ranges[k].min}..{ranges[k].max}): "
                f"the engine says {refused!r}. The manifest was edited or damaged: save the model again"
            )
    for k, spec in enumerate(specs):
        if ranges[k].max == ranges[k].opt:
            continue
        refused = _refusal(runner, specs, opts, k, device) or _refusal(runner, specs, [*opts[:k], ranges[k].max, *opts[k + 1:]], k, device)
        if refused is not None:
            # Inductor may narrow a range while it compiles (seen: batch <= 15 in an engine exported
            # for 1..32 that serves 32 correctly); its checks would refuse what the profile serves
            logger.warning("%s: the engine's own input checks allow less than the profile for input %r (%s); "
                           "serving it without them", where, spec.name, refused)
            return NARROWER
    return CHECKED_OK
