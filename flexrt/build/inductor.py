"""Build: export one segment at one profile's ranges and compile it with AOTInductor.

Each segment's inputs carry the program's symbolic sizes (s0, 8*s0, u0...). Root symbols get one
`Dim` each with the profile's range (static where the profile is); linear expressions become
derived Dims (8*s0); anything else a Dim of its own whose range is bounded from the profile.
Example inputs sit at the profile's opt (at least 2 on dynamic dims), so Inductor tunes there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import operator
import os
import re
import tempfile
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import sympy
import torch
from torch.export import Dim, ExportedProgram
from torch.utils._sympy.value_ranges import ValueRanges, bound_sympy

from flexrt._version import __version__
from flexrt.build import cache
from flexrt.build.failure import describe_build_failure
from flexrt.build.keys import device_key, digest, process_inductor_config
from flexrt.build.timers import BuildTimes, inductor_phases
from flexrt.errors import CompilationError
from flexrt.ir.binary import EXTERN_NODES, EngineBinary
from flexrt.settings import CompileSettings
from flexrt.spec import UNBOUNDED, finite_or, random_tensor
from flexrt.tf32 import tf32_policy
from flexrt.trace.export import suggested_fixes
from flexrt.trace.guards import exact_meta_shapes, export_flags, size_oblivious

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SymbolRange:
    """A root symbol's range in one profile, and the size to trace it at."""

    lo: int
    hint: int
    hi: int


def _linear(expr: sympy.Expr) -> tuple[sympy.Symbol, int, int] | None:
    """expr == a*s + b with integer a, b and one symbol s, or None."""
    syms = list(expr.free_symbols)
    if len(syms) != 1:
        return None
    s = syms[0]
    poly = sympy.Poly(expr, s) if expr.is_polynomial(s) else None
    if poly is None or poly.degree() != 1:
        return None
    a, b = poly.all_coeffs()
    if not (a.is_integer and b.is_integer):
        return None
    return s, int(a), int(b)


def _bounds(expr: sympy.Expr, ranges: Mapping[sympy.Symbol, ValueRanges]) -> tuple[int, int]:
    vr = bound_sympy(expr, dict(ranges))
    return max(finite_or(vr.lower, 0), 0), min(finite_or(vr.upper, UNBOUNDED), UNBOUNDED)


@dataclasses.dataclass(frozen=True)
class DimSpec:
    """One dynamic dim of a segment input, as data (picklable, for a build in a worker process):
    `a * root + b`, the root a `Dim` named `name` over [lo, hi]."""

    name: str
    lo: int
    hi: int
    a: int = 1
    b: int = 0


def segment_dims(
    module: torch.fx.GraphModule, examples: Sequence[torch.Tensor], symbols: Mapping[sympy.Symbol, SymbolRange]
) -> list[dict[int, DimSpec] | None]:
    """dynamic_shapes for re-exporting a segment, one entry per placeholder (see `to_dims`)."""
    ranges: dict[sympy.Symbol, ValueRanges] = {s: ValueRanges(r.lo, r.hi) for s, r in symbols.items()}
    fresh = 0
    specs: list[dict[int, DimSpec] | None] = []
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    for node, example in zip(placeholders, examples):
        val = node.meta.get("val")
        spec: dict[int, DimSpec] = {}
        if isinstance(val, torch.Tensor):
            for axis, size in enumerate(val.shape):
                if not isinstance(size, torch.SymInt):
                    continue
                expr = size.node.expr
                env_ranges = dict(getattr(size.node.shape_env, "var_to_range", {}))
                env_ranges.update(ranges)
                if expr.free_symbols <= set(symbols):
                    lo, hi = _bounds(expr, ranges)
                    if lo == hi:
                        continue
                    lin = _linear(expr)
                    if lin is not None:
                        s, a, b = lin
                        r = symbols[s]
                        spec[axis] = DimSpec(f"d_{s}", r.lo, r.hi, a, b)
                        continue
                else:
                    lo, hi = _bounds(expr, env_ranges)
                    if lo == hi:
                        continue
                if example.shape[axis] < 2:
                    raise CompilationError(
                        f"build: a data-dependent size of segment input {node.name!r} (dim {axis}) was "
                        f"{example.shape[axis]} in the example run; cannot compile it as dynamic"
                    )
                fresh += 1
                spec[axis] = DimSpec(f"f{fresh}_{node.name}", lo, max(hi, lo + 1))
        specs.append(spec or None)
    return specs


def to_dims(specs: Sequence[Mapping[int, DimSpec] | None]) -> list[dict[int, Any] | None]:
    """torch.export Dims for `segment_dims`' specs; a root named twice is one Dim (tied dims)."""
    roots: dict[str, Any] = {}

    def root(spec: DimSpec) -> Any:
        return roots.setdefault(spec.name, Dim(spec.name, min=spec.lo, max=spec.hi))

    out: list[dict[int, Any] | None] = []
    for spec in specs:
        if spec is None:
            out.append(None)
            continue
        out.append({axis: root(d) if (d.a, d.b) == (1, 0) else root(d) * d.a + d.b for axis, d in spec.items()})
    return out


def widen_data_dependent(module: torch.fx.GraphModule, examples: Sequence[Any]) -> list[Any]:
    """Example inputs to trace a segment at, with every data-dependent size of 0 or 1 widened to 2.

    A size computed from tensor data (rows selected by `nonzero`) is whatever the random example run
    gave; at 0 or 1 export would specialise on it, so whether the build works would depend on the
    random data. Only the trace sees these tensors (random values of the same dtype), never the run."""
    out = list(examples)
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    for i, (node, example) in enumerate(zip(placeholders, examples)):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or not isinstance(example, torch.Tensor):
            continue
        shape = list(example.shape)
        for axis, size in enumerate(val.shape):
            unbacked = isinstance(size, torch.SymInt) and any(str(s).startswith("u") for s in size.node.expr.free_symbols)
            if unbacked and shape[axis] < 2:
                shape[axis] = 2
        if shape != list(example.shape):
            out[i] = random_tensor(shape, example.dtype, example.device)
            logger.debug("build: traced segment input %r at %s instead of its example %s", node.name, shape, tuple(example.shape))
    return out


def export_segment(
    module: torch.fx.GraphModule,
    examples: Sequence[torch.Tensor],
    symbols: Mapping[sympy.Symbol, SymbolRange],
    oblivious: bool = False,
) -> ExportedProgram:
    """Export a segment at one profile's ranges."""
    examples = widen_data_dependent(module, examples)
    return export_with_dims(module, examples, segment_dims(module, examples, symbols), oblivious)


def export_with_dims(
    module: torch.fx.GraphModule, examples: Sequence[Any], specs: Sequence[Mapping[int, DimSpec] | None], oblivious: bool
) -> ExportedProgram:
    """Export a segment with the given dynamic dims (from `segment_dims`, made in the process that
    holds the graph's symbolic sizes); apply torch.export's suggested fixes (equal or static dims) and
    retry."""
    dims = to_dims(specs)
    for _attempt in range(8):
        try:
            with torch.no_grad(), size_oblivious(oblivious), exact_meta_shapes():
                return torch.export.export(
                    module, tuple(examples), dynamic_shapes=tuple(dims), strict=False, **export_flags()
                )
        except Exception as e:
            fixes = suggested_fixes(str(e))
            by_name = {d.__name__: (i, a) for i, spec in enumerate(dims) for a, d in (spec or {}).items()}
            applied = False
            for lhs, rhs in fixes:
                if lhs not in by_name:
                    continue
                i, a = by_name[lhs]
                if rhs.lstrip("-").isdigit():
                    del dims[i][a]  # type: ignore[union-attr]
                    applied = True
                elif rhs in by_name:
                    j, b = by_name[rhs]
                    dims[i][a] = dims[j][b]  # type: ignore[index]
                    applied = True
            if not applied:
                raise CompilationError(describe_build_failure("re-exporting a segment", e, module.graph, "a segment")) from e
            dims = [d or None for d in dims]
    raise CompilationError("build: could not export a segment with consistent dynamic dims")


def _canonical_symbols(text: str) -> str:
    names: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        return names.setdefault(m.group(0), f"{m.group(0)[0]}{len(names)}")

    return re.sub(r"\b[su]\d+\b", sub, text)


_CONVOLUTIONS = {
    torch.ops.aten.convolution.default,
    torch.ops.aten.conv1d.default,
    torch.ops.aten.conv2d.default,
    torch.ops.aten.conv3d.default,
}


def inductor_configs(settings: CompileSettings, ep: ExportedProgram | None = None) -> dict[str, Any]:
    from flexrt.lower.post_grad.pipeline import PostGradPasses  # imports Inductor: only when an engine is built

    cfg: dict[str, Any] = {
        "aot_inductor.package_constants_in_so": True,
        # every weight stays a named constant (Inductor would otherwise inline 1-d tensors of up to 8
        # values, e.g. a small bias, into the code), so that refit can replace all of them
        "always_keep_tensor_constants": True,
        "post_grad_custom_pre_pass": PostGradPasses(settings),
    }
    import torch._inductor.config as inductor_config  # loaded by the import above; named for clarity

    if hasattr(inductor_config.aot_inductor, "check_lowerbound"):
        # the engine's own input checks (switched on at load: runtime/engine_check.py) must accept
        # every size a profile allows; export's lower bound of 2 on dynamic dims is not one of them
        cfg["aot_inductor.check_lowerbound"] = False
    if settings.device.type == "cuda":
        cfg["aot_inductor.embed_kernel_binary"] = True
        # A CUDA engine's kernels are Triton's, its C++ is launch code: it needs no CPU vector ISA.
        # Without this, Inductor's first C++ compile in a process probes each ISA by compiling a test
        # program (48 of a 69 s first build on the H200 with cold caches; benchmarks/build_time.py).
        cfg["cpp.vec_isa_ok"] = False
        # Inductor turns its channels-last layout optimisation off for any graph with dynamic shapes
        # (pytorch#102670); for convolutions on the GPU that cost ResNet-50 in fp16 1.3-1.5x against
        # the same model compiled static (benchmarks/results). flexrt's engines keep it on.
        if ep is not None and any(n.op == "call_function" and n.target in _CONVOLUTIONS for n in ep.graph.nodes):
            cfg["force_layout_optimization"] = True
    if settings.optimization_level >= 4:
        cfg["max_autotune"] = True
    if settings.optimization_level >= 5:
        cfg["coordinate_descent_tuning"] = True
    return cfg


def _build_config(settings: CompileSettings, ep: ExportedProgram | None = None) -> str:
    """What configures a build, for the cache keys: flexrt's Inductor patch, the process's Inductor
    settings under it, and TF32."""
    return "\0".join([
        repr(sorted(inductor_configs(settings, ep).items())),
        repr(sorted(process_inductor_config().items())),
        f"tf32={not settings.disable_tf32}",
    ])


def engine_key(ep: ExportedProgram, settings: CompileSettings) -> str:
    """Content hash of everything that shapes the compiled engine."""
    parts = [
        "flexrt-engine-2",
        __version__,
        torch.__version__,
        device_key(settings.device),
        _build_config(settings, ep),
        _canonical_symbols(str(ep.graph)),
        _canonical_symbols(repr(sorted((str(k), str(v)) for k, v in ep.range_constraints.items()))),
        repr([(tuple(t.shape), str(t.dtype), tuple(t.stride())) for t in (ep.example_inputs or ((), {}))[0]]),
    ]
    tensors = {**ep.state_dict, **ep.constants}
    return digest(parts, [(name, tensors[name]) for name in sorted(tensors)])


@contextlib.contextmanager
def _quiet_leafspec() -> Any:
    """Silence torch 2.13's `LeafSpec` FutureWarning, printed once per engine build otherwise.

    Its source is inside torch: Inductor's debug wrapper (`torch._dynamo.repro.after_aot`) deep-copies
    every graph it compiles, and copying the graph's pytree spec constructs a `LeafSpec`, whose
    deprecation shim warns. Nothing in flexrt's graphs can avoid the copy, so only this message is
    filtered, and only around the build.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        yield


def segment_key(module: torch.fx.GraphModule, examples: Sequence[Any], symbols: Mapping[sympy.Symbol, SymbolRange],
                oblivious: bool, settings: CompileSettings) -> str:
    """Content hash of what a segment's export is made from (its code, constants, example shapes,
    the profile's ranges): with an engine already cached for it, the export is skipped too."""
    parts = [
        "flexrt-segment-2", __version__, torch.__version__, device_key(settings.device),
        _build_config(settings), f"oblivious={oblivious}", module.code,
        repr(sorted((str(k), (v.lo, v.hint, v.hi)) for k, v in symbols.items())),
        repr([(tuple(t.shape), str(t.dtype), tuple(t.stride())) if isinstance(t, torch.Tensor) else repr(t) for t in examples]),
    ]
    constants = [(str(n.target), operator.attrgetter(str(n.target))(module)) for n in module.graph.find_nodes(op="get_attr")]
    return digest(parts, constants)


def cached_engine(segment: str, settings: CompileSettings, label: str) -> EngineBinary | None:
    """The engine cached for a segment key (see segment_key), without exporting the segment."""
    key = cache.get(segment, settings.cache_dir, count=False)
    blob = cache.get(key.decode("ascii"), settings.cache_dir) if key else None
    if blob is None:
        return None
    logger.info("engine %s: reused from cache (%s), no re-export", label, key.decode("ascii")[:12])
    return EngineBinary.from_bytes(blob, key=key.decode("ascii"))


@dataclasses.dataclass
class CompiledEngine:
    """What `compile_engine` returns: the engine, its cache key, whether it was built here (not
    cached) and, if built, where the build's time went."""

    key: str
    binary: EngineBinary
    built: bool
    times: BuildTimes | None = None


def compile_engine(
    ep: ExportedProgram, settings: CompileSettings, label: str, segment: str | None = None
) -> CompiledEngine:
    """AOTInductor-compile one exported segment (or take it from the engine cache); `segment` (its
    segment_key) is remembered as leading to this engine."""
    times = BuildTimes()
    start = time.perf_counter()
    key = engine_key(ep, settings)
    times.key_s = time.perf_counter() - start
    if segment is not None:
        cache.put(segment, key.encode("ascii"), settings.cache_dir)
    blob = cache.get(key, settings.cache_dir)
    if blob is not None:
        logger.info("engine %s: reused from cache (%s)", label, key[:12])
        return CompiledEngine(key, EngineBinary.from_bytes(blob, key=key), False)
    # Inductor's Triton GEMM templates read the TF32 flag when they are generated
    policy = tf32_policy(not settings.disable_tf32) if settings.device.type == "cuda" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="flexrt-build-") as tmp, policy, _quiet_leafspec(), exact_meta_shapes():
        start = time.perf_counter()
        try:
            with inductor_phases() as times.phases:
                path = torch._inductor.aoti_compile_and_package(
                    ep, package_path=os.path.join(tmp, "engine.pt2"), inductor_configs=inductor_configs(settings, ep)
                )
        except Exception as e:
            raise CompilationError(describe_build_failure("AOTInductor", e, ep.graph, label)) from e
        times.inductor_s = time.perf_counter() - start
        start = time.perf_counter()
        binary = _read_package(path, key)
    cache.put(key, binary.to_bytes(), settings.cache_dir)
    times.package_s = time.perf_counter() - start
    logger.info("engine %s: built in %.1f s (%.1f MB)", label, times.key_s + times.inductor_s + times.package_s,
                binary.size / 1e6)
    return CompiledEngine(key, binary, True, times)


def _read_package(path: str, key: str) -> EngineBinary:
    """The engine in an AOTInductor package: its one shared object, kernel binaries and extern-op nodes."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        sos = [n for n in names if n.endswith(".so")]
        if len(sos) != 1:
            raise CompilationError(f"build: expected one shared object in the AOTInductor package, found {sos}")
        kernels = {os.path.basename(n): z.read(n) for n in names if n.endswith((".cubin", ".fatbin", ".hsaco", ".spv"))}
        extern = sos[0][: -len(".so")] + ".json"
        if extern in names:  # ops called through the dispatcher (see binary.EXTERN_NODES)
            kernels[EXTERN_NODES] = z.read(extern)
        return EngineBinary(z.read(sos[0]), kernels, key=key)
