"""The model as a serving process holds it: loaded on its device, warmed, run on one thread.

Used by the single-tier deployment (HTTP and the model in one replica) and by the model tier of a
two-tier one (`--frontends N`: CPU replicas answer HTTP and batch, the model replicas only run
stacked calls). Imports no Ray.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

import flexrt
from flexrt.errors import ServingError
from flexrt.serving import protocol
from flexrt.serving.batching import BatchPlan, warm_up_shapes, warm_up_symbols
from flexrt.serving.config import ServeConfig

T = TypeVar("T")

# Consecutive model calls failing on the device (a CUDA error) after which the replica reports itself
# unhealthy: a sticky error (an illegal memory access) fails every later call of the process, and Ray
# Serve replaces a replica whose check_health raises.
UNHEALTHY_AFTER = 3


def is_device_failure(error: BaseException) -> bool:
    """A failure of the device or its libraries, not of the request (CUDA, cuBLAS, cuDNN errors)."""
    accelerator = getattr(torch, "AcceleratorError", None)  # torch >= 2.8 raises it for CUDA errors
    if accelerator is not None and isinstance(error, accelerator):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(m in text for m in ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "CUDNN_STATUS"))


class ModelHost:
    """Loads the artifact (or the A/B reference model), warms every profile, runs calls in order.

    Every model call (the warm-up's too) runs on one thread, in arrival order: one call at a time
    per process (the module keeps state, and CUDA graphs replay on the thread that captured them).
    With a thread per call from asyncio's default pool, unbatched requests had queued for a lock in
    up to 32 threads (unordered), and each new pool thread first touched CUDA under load."""

    def __init__(self, config: ServeConfig) -> None:
        started = time.perf_counter()
        self.config = config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ServingError("--device cuda: this replica sees no CUDA device (is num_gpus=1 granted?)")
        artifact = flexrt.load(config.artifact)
        self.signature = protocol.ModelSignature.from_artifact(config.name, artifact)
        self.module = artifact.module() if config.backend == "flexrt" else self._reference()
        self.plan = BatchPlan.resolve(self.signature, dict(config.batch_dims)) if config.batching else None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexrt-model")
        self.threads: set[int] = set()  # threads that ran the model (warm-up included): /stats
        self.calls = 0
        self.model_ms = 0.0
        self.device_failures = 0  # consecutive model calls that failed on the device (see check_health)
        self.last_device_error = ""
        self.pool.submit(self._warm_up).result()  # captures on the thread that replays them
        self.calls, self.model_ms = 0, 0.0  # count requests' model calls, not the warm-up's
        self.startup_s = time.perf_counter() - started

    def _reference(self) -> Any:
        """The A/B peer: the same model in PyTorch (eager) or torch.compile'd, on this device."""
        module_name, _, attr = self.config.reference_model.partition(":")
        model = getattr(importlib.import_module(module_name), attr)().eval().to(self.device)
        if self.config.backend == "torch_compile":
            model = torch.compile(model, dynamic=True)
        return model

    def _warm_up(self) -> None:
        """Run the shapes `warm_up_shapes` picks, so that engines load and CUDA graphs are captured now,
        not on requests, and start-up fails if the artifact cannot run on this device."""
        sizes = warm_up_symbols(self.signature, self.config.warm_up_sizes)
        for k, shapes in enumerate(warm_up_shapes(self.signature, self.plan, self.config.padding, sizes)):
            try:
                for shape in shapes:
                    self.execute({s.name: torch.zeros(shape[s.name], dtype=s.dtype) for s in self.signature.inputs}, k)
            except Exception as e:
                raise ServingError(f"warm-up of profile {k} failed: {e}") from e

    def execute(self, inputs: dict[str, torch.Tensor], profile: int) -> dict[str, torch.Tensor]:
        """Named CPU tensors -> named CPU outputs, on the calling thread (the pool's, see `run`).
        `profile` is what the caller chose for its metrics; the module chooses again, the same way."""
        del profile
        with torch.inference_mode():
            self.threads.add(threading.get_ident())
            start = time.perf_counter()  # copies in, the model, copies out (synchronous): the device's share
            try:
                args = [inputs[n].to(self.device, non_blocking=True) for n in self.signature.input_names]
                result = self.module(*args)
                outputs = protocol.outputs_by_name(result, self.signature)
                outputs = {n: t.to("cpu") for n, t in outputs.items()}
            except Exception as e:
                if is_device_failure(e):
                    self.device_failures += 1
                    self.last_device_error = f"{type(e).__name__}: {e}"[:500]
                raise
            self.device_failures = 0
            self.calls += 1
            self.model_ms += (time.perf_counter() - start) * 1000
        return outputs

    def check_health(self) -> None:
        """Raise once the device has failed `UNHEALTHY_AFTER` calls in a row: Ray Serve then restarts
        this replica (a new process, a new CUDA context) instead of it failing every request."""
        if self.device_failures >= UNHEALTHY_AFTER:
            raise ServingError(f"the last {self.device_failures} model calls failed on {self.device}: {self.last_device_error}")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the model thread, awaited from the replica's event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def stats(self) -> dict[str, Any]:
        """Model calls run here since the warm-up, their time, and this process's GPU memory."""
        return {"model_calls": self.calls, "model_busy_ms": self.model_ms, "model_threads": len(self.threads),
                "model_startup_s": self.startup_s, **memory(self.device)}


def replica_identity(device: torch.device) -> dict[str, Any]:
    """Which replica answered /stats and on which GPU: with several replicas, a client tells them
    apart (and checks that each has its own device) from this."""
    try:
        from ray import serve

        replica = serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside a Serve replica (tests calling the class directly)
        replica = f"pid-{os.getpid()}"
    identity: dict[str, Any] = {"replica_id": replica, "pid": os.getpid(),
                                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        identity["gpu"] = {"name": props.name, "uuid": str(getattr(props, "uuid", "")),
                           "pci_bus_id": getattr(props, "pci_bus_id", None)}
    return identity


def memory(device: torch.device) -> dict[str, Any]:
    """This process's GPU memory now (PyTorch's allocator: engines, CUDA graphs, buffers)."""
    if device.type != "cuda":
        return {}
    return {"gpu_memory_allocated_mib": torch.cuda.memory_allocated(device) / 2**20,
            "gpu_memory_reserved_mib": torch.cuda.memory_reserved(device) / 2**20,
            "gpu_max_memory_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}
