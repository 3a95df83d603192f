"""Checks shared by the tests: every compiled result is compared with eager PyTorch on fresh random data."""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from models import MaskedAttentionLayers

import flexrt
from flexrt.settings import build_settings
from flexrt.spec import random_tensor
from flexrt.tf32 import TF32_TOLERANCE

# Settings aimed at CUDA, built on any machine: the lowering passes rewrite only CUDA engines' graphs,
# and the rewrites themselves are checked on the CPU against eager.
CUDA_SETTINGS = dataclasses.replace(build_settings({}, torch.device("cpu")), device=torch.device("cuda"))

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float64: 1e-6}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.numel() == 0:
        return 0.0
    diff = (out.double() - ref.double()).norm()
    scale = ref.double().norm().clamp_min(1e-12)
    return float(diff / scale)


def assert_matches(out: Any, ref: Any, precision: torch.dtype = torch.float32) -> None:
    """Same structure, shapes and dtypes; values within the precision's relative tolerance.

    Float32 on CUDA is held to TF32's tolerance: flexrt's engines use TF32 there unless compiled
    with `disable_tf32=True` (tests of strict engines check their error themselves).
    """
    out_leaves, out_spec = pytree.tree_flatten(out)
    ref_leaves, ref_spec = pytree.tree_flatten(ref)
    assert out_spec == ref_spec, f"output structure {out_spec} != eager {ref_spec}"
    for o, r in zip(out_leaves, ref_leaves):
        if not isinstance(r, torch.Tensor):
            assert o == r
            continue
        assert isinstance(o, torch.Tensor)
        assert o.shape == r.shape, f"shape {tuple(o.shape)} != eager {tuple(r.shape)}"
        assert o.dtype == r.dtype, f"dtype {o.dtype} != eager {r.dtype}"
        assert o.device == r.device
        assert torch.isfinite(o.double()).all() or not torch.isfinite(r.double()).all()
        if r.dtype.is_floating_point:
            err = rel_err(o, r)
            tf32 = precision == torch.float32 and o.device.type == "cuda"
            tol = TF32_TOLERANCE if tf32 else TOLERANCE[precision]
            assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"
        else:
            assert torch.equal(o, r)


def range_shapes(specs: Sequence[flexrt.Input], between: int = 2) -> list[list[tuple[int, ...]]]:
    """Shapes for all inputs at min, opt, max and `between` random points inside the ranges.

    A random size is drawn once per (dim position, range) and shared by every input with that
    range there, so inputs the model ties together (a batch dim) stay equal.
    """
    rows = [[s.range.min for s in specs], [s.range.opt for s in specs], [s.range.max for s in specs]]
    for _ in range(between):
        drawn: dict[tuple[int, int, int], int] = {}
        rows.append([
            tuple(drawn.setdefault((d, lo, hi), random.randint(lo, hi)) for d, (lo, hi) in enumerate(zip(s.range.min, s.range.max)))
            for s in specs
        ])
    return rows


def sweep(compiled: Any, model: torch.nn.Module, specs: Sequence[flexrt.Input], device: Any = "cpu",
          kwarg_specs: dict[str, flexrt.Input] | None = None, precision: torch.dtype = torch.float32) -> int:
    """Compiled vs eager at min/opt/max/between, fresh random data each time; returns how many shapes ran."""
    kwarg_specs = kwarg_specs or {}
    all_specs = [*specs, *kwarg_specs.values()]
    rows = range_shapes(all_specs)
    for shapes in rows:
        tensors = [random_tensor(shape, s.dtype, device, s.format) for shape, s in zip(shapes, all_specs)]
        args, kwargs = tensors[: len(specs)], dict(zip(kwarg_specs, tensors[len(specs):]))
        with torch.no_grad():
            ref = model(*args, **kwargs)
            out = compiled(*args, **kwargs)
        assert_matches(out, ref, precision)
    return len(rows)


def compile_masked_attention(square: bool, max_seq: int, device: str, caplog: Any
                             ) -> tuple[torch.nn.Module, list[flexrt.Input], torch.dtype, Any]:
    """`MaskedAttentionLayers` compiled by flexrt (float16 on CUDA, float32 on the CPU), with the
    post-grad passes' log captured in `caplog`: which passes rewrote what."""
    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = MaskedAttentionLayers(square=square).eval().to(device, dtype)
    specs = MaskedAttentionLayers.specs(dtype, max_seq)
    with caplog.at_level(logging.DEBUG, logger="flexrt.lower.post_grad.pipeline"):
        return model, specs, dtype, flexrt.compile(model, inputs=specs, enabled_precisions={dtype})


def in_threads(work: Callable[[int], None], n: int, limit_s: float = 120.0) -> list[BaseException]:
    """Run work(i) on n threads; the exceptions they raised (a thread still running after limit_s is one)."""
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    errors.extend(TimeoutError(f"{t.name} still running after {limit_s} s") for t in threads if t.is_alive())
    return errors
