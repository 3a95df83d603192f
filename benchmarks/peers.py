"""The peers flexrt is measured against, each given the model as a user writes it, with its defaults.

Every peer is a callable on a tuple of input tensors, built by `setup()` (timed by the caller) and
able to say how many compiles (graphs, engines, CUDA graph captures) it has done so far, so the
caller can count them over a stream of random shapes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, ClassVar

import torch

from benchmarks.models import Case
from flexrt.runtime.loader import promote_libstdcxx
from flexrt.tf32 import TF32_TOLERANCE

logger = logging.getLogger(__name__)


class Peer:
    """Base: eager PyTorch."""

    name: ClassVar[str] = "eager"
    needs_cuda: ClassVar[bool] = False
    cold_start: ClassVar[str | None] = None  # "aoti" | "flexrt": can be loaded in a fresh process

    def __init__(self, case: Case, model: torch.nn.Module, device: torch.device, workdir: str) -> None:
        self.case = case
        self.model = model
        self.device = device
        self.workdir = workdir
        self.fn: Any = model

    def setup(self) -> dict[str, Any]:
        """Build whatever the peer runs; returns details for the report."""
        return {}

    def __call__(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        return self.fn(*inputs)

    def compile_counts(self) -> dict[str, int]:
        return {}

    @classmethod
    def skip_reason(cls, case: Case, device: torch.device) -> str | None:
        """Why this peer does not run on this case, or None."""
        return "needs CUDA" if cls.needs_cuda and device.type != "cuda" else None

    def tolerance(self, default: float) -> float:
        """The relative error against eager this peer's output may show (above it is flagged)."""
        return default

    def stream_note(self, counts: dict[str, int]) -> str | None:
        """Anything a reader must know about the compile counts after the stream."""
        return None

    def close(self) -> None:
        self.fn = None
        self.model = None  # type: ignore[assignment]


class EagerCudaGraph(Peer):
    """Eager captured in one torch.cuda.CUDAGraph per input shape (static inputs, a shared pool);
    the first call of a shape captures. Output is the graph's static tensor (not cloned)."""

    name = "eager_cudagraph"
    needs_cuda = True

    def setup(self) -> dict[str, Any]:
        self.graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], Any]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        return {}

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], Any]:
        static = tuple(t.clone() for t in inputs)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.model(*static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.model(*static)
        return graph, static, out

    def __call__(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        key = tuple(t.shape for t in inputs)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(inputs)
        graph, static, out = entry
        for dst, src in zip(static, inputs):
            dst.copy_(src)
        graph.replay()
        return out

    def compile_counts(self) -> dict[str, int]:
        return {"cuda_graph_captures": len(self.graphs)}

    def close(self) -> None:
        self.graphs = {}
        super().close()


class TorchCompile(Peer):
    """torch.compile with its defaults: static first, then dynamic as Dynamo decides."""

    name = "torch_compile"
    options: ClassVar[dict[str, Any]] = {}

    def setup(self) -> dict[str, Any]:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        self.fn = torch.compile(self.model, **self.options)
        cfg = torch._dynamo.config
        self.limit = int(getattr(cfg, "recompile_limit", None) or getattr(cfg, "cache_size_limit", 8))
        return {"options": {k: str(v) for k, v in self.options.items()}, "recompile_limit": self.limit}

    def compile_counts(self) -> dict[str, int]:
        counters = torch._dynamo.utils.counters
        return {"graphs": int(counters["stats"]["unique_graphs"]), "frames": int(counters["frames"]["ok"])}

    def stream_note(self, counts: dict[str, int]) -> str | None:
        if counts.get("graphs", 0) >= self.limit:
            return f"recompile_limit={self.limit} reached: later new shapes ran eager"
        return None

    def close(self) -> None:
        super().close()
        torch._dynamo.reset()
        try:  # CUDA graph trees keep their pool past dynamo's reset
            torch._inductor.cudagraph_trees.reset_cudagraph_trees()
        except (AttributeError, RuntimeError) as e:
            logger.debug("cudagraph trees not reset: %s", e)


class TorchCompileRO(TorchCompile):
    """torch.compile(mode="reduce-overhead", dynamic=False): one specialised graph per shape,
    replayed through CUDA graph trees (outputs are overwritten by the next call)."""

    name = "torch_compile_ro"
    options: ClassVar[dict[str, Any]] = {"mode": "reduce-overhead", "dynamic": False}

    def __call__(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        return self.fn(*inputs)


class AOTI(Peer):
    """One AOTInductor package over the whole range: torch.export with a Dim, compile, load."""

    name = "aoti"
    cold_start = "aoti"

    def setup(self) -> dict[str, Any]:
        example = self.case.make_inputs(self.case.opt, self.device, seed=1)
        t = time.perf_counter()
        ep = torch.export.export(self.model, example, dynamic_shapes=self.case.export_dims())
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        self.artifact = torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(self.workdir, "aoti.pt2"))
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        promote_libstdcxx()  # without it, loading a package crashed on the GPU image (flexrt/runtime/loader.py)
        # the package's own loader, without aoti_load_package's device probe (46 s on the GPU image)
        from torch.export.pt2_archive._package import AOTICompiledModel

        self.fn = AOTICompiledModel(torch._C._aoti.AOTIModelPackageLoader(self.artifact, "model", False, 1, -1))
        load_s = time.perf_counter() - t
        return {"export_s": export_s, "compile_s": compile_s, "load_s": load_s,
                "package_bytes": os.path.getsize(self.artifact)}

    def compile_counts(self) -> dict[str, int]:
        return {"compiles": 1}


class Flexrt(Peer):
    """flexrt.compile with its defaults over the range (opt as the case says)."""

    name = "flexrt"
    cold_start = "flexrt"
    options: ClassVar[dict[str, Any]] = {}

    def tolerance(self, default: float) -> float:
        tf32 = self.case.dtype == torch.float32 and self.device.type == "cuda" and not self.options.get("disable_tf32")
        return max(default, TF32_TOLERANCE) if tf32 else default

    def setup(self) -> dict[str, Any]:
        import flexrt
        import flexrt.build.cache

        before = flexrt.build.cache.stats()
        self.fn = flexrt.compile(self.model, ir="dynamo", inputs=self.case.flexrt_inputs(),
                                 enabled_precisions={self.case.dtype}, **self.options)
        after = flexrt.build.cache.stats()
        return {"profiles": len(self.fn.engine.profiles), "engine_builds": after["misses"] - before["misses"],
                "engine_cache_hits": after["hits"] - before["hits"], "flexrt_version": flexrt.__version__}

    def compile_counts(self) -> dict[str, int]:
        import flexrt.build.cache

        captures = sum(getattr(getattr(c, "graphs", None), "captures", 0) for c in getattr(self.fn, "contexts", []))
        return {"engine_builds": flexrt.build.cache.stats()["misses"], "profiles": len(self.fn.engine.profiles),
                "cuda_graph_captures": int(captures)}


class FlexrtNoTf32(Flexrt):
    """flexrt with `disable_tf32=True`: strict float32, what the other peers compute by default."""

    name = "flexrt_no_tf32"
    cold_start = None
    options: ClassVar[dict[str, Any]] = {"disable_tf32": True}

    @classmethod
    def skip_reason(cls, case: Case, device: torch.device) -> str | None:
        if case.dtype != torch.float32 or device.type != "cuda":
            return "TF32 applies to float32 models on CUDA only"
        return super().skip_reason(case, device)


class _Tf32:
    """A float32 peer with TF32 allowed for its matmuls and convolutions, as a user chasing speed sets
    it (`torch.backends.cuda.matmul.allow_tf32`): flexrt's float32 engines use TF32 by default, so
    these count as peers too. Set for the peer's whole life (compile and calls), restored at close."""

    def setup(self) -> dict[str, Any]:
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        return {**super().setup(), "tf32": True}  # type: ignore[misc]

    def tolerance(self, default: float) -> float:
        return max(default, TF32_TOLERANCE)

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        if hasattr(self, "_saved"):
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved

    @classmethod
    def skip_reason(cls, case: Case, device: torch.device) -> str | None:
        if case.dtype != torch.float32 or device.type != "cuda":
            return "TF32 applies to float32 models on CUDA only"
        return super().skip_reason(case, device)  # type: ignore[misc]


class TorchCompileTf32(_Tf32, TorchCompile):
    name = "torch_compile_tf32"


class TorchCompileROTf32(_Tf32, TorchCompileRO):
    name = "torch_compile_ro_tf32"


class EagerCudaGraphTf32(_Tf32, EagerCudaGraph):
    name = "eager_cudagraph_tf32"


PEERS: dict[str, type[Peer]] = {
    p.name: p
    for p in (Peer, EagerCudaGraph, Flexrt, FlexrtNoTf32, AOTI, TorchCompile, TorchCompileRO, TorchCompileTf32,
              TorchCompileROTf32, EagerCudaGraphTf32)
}
PEER_NAMES = tuple(PEERS)
