"""The Ray Serve deployment: a FastAPI ingress speaking Open Inference Protocol v2 over one artifact.

Per request: parse and validate in full (400 on any error, before batching), then either run alone
(no --batch-dim) or wait in Ray's `@serve.batch` queue, where `batching.run_chunks` groups the batch
by shape, stacks, runs and splits. Every request gets exactly one answer: its rows, or its chunk's
error. Backpressure (503 + Retry-After) is Ray Serve's `max_queued_requests`.
Imports Ray: import this module only where Ray is installed (`flexrt serve`, `serve run`).
"""

# No `from __future__ import annotations` here: FastAPI reads these route signatures'
# annotations at runtime (Request must be a class, not a string, for it to be injected).

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

import flexrt
from flexrt.errors import InputSpecError, OutputEncodingError, RequestError, ServingError
from flexrt.serving import protocol
from flexrt.serving.batching import BatchPlan, run_chunks, warm_up_shapes, warm_up_symbols
from flexrt.serving.config import ServeConfig

logger = logging.getLogger(__name__)

LATENCY_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128]

api = FastAPI(title="flexrt", description="Open Inference Protocol v2 over a flexrt artifact")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Item:
    """One validated request waiting in the batch queue."""

    __slots__ = ("request", "enqueued")

    def __init__(self, request: protocol.InferRequest) -> None:
        self.request = request
        self.enqueued = time.perf_counter()


class _Metrics:
    """Counters and histograms through ray.serve.metrics (exported on Ray's metrics endpoint)."""

    def __init__(self, model: str) -> None:
        from ray.serve import metrics

        self.tags = {"model": model}
        self.requests = metrics.Counter(
            "flexrt_requests", description="Infer requests answered, by HTTP status", tag_keys=("model", "code")
        )
        self.latency = metrics.Histogram(
            "flexrt_request_latency_ms", description="Infer request time in the replica (ms)",
            boundaries=LATENCY_MS, tag_keys=("model",),
        )
        self.queue = metrics.Histogram(
            "flexrt_queue_time_ms", description="Time a request waited in the batch queue (ms)",
            boundaries=LATENCY_MS, tag_keys=("model",),
        )
        self.batch_requests = metrics.Histogram(
            "flexrt_batch_requests", description="Requests run as one model call", boundaries=BATCH_BUCKETS, tag_keys=("model",)
        )
        self.batch_rows = metrics.Histogram(
            "flexrt_batch_rows", description="Rows (batch dim) of one model call", boundaries=BATCH_BUCKETS, tag_keys=("model",)
        )
        self.profiles = metrics.Counter(
            "flexrt_profile_picks", description="Model calls per profile", tag_keys=("model", "profile")
        )

        # this replica's totals, for GET /v2/models/{name}/stats (Prometheus has the cluster's)
        self.stats: dict[str, Any] = {"requests": 0, "calls": 0, "rows": 0, "batch_requests": {}, "batch_rows": {},
                                     "profiles": {}, "answered": 0, "replica_ms": 0.0, "queue_ms": 0.0, "model_ms": 0.0}

    def chunk(self, requests: int, rows: int, profile: int) -> None:
        st = self.stats
        st["requests"] += requests
        st["calls"] += 1
        st["rows"] += rows
        st["batch_requests"][str(requests)] = st["batch_requests"].get(str(requests), 0) + 1
        st["batch_rows"][str(rows)] = st["batch_rows"].get(str(rows), 0) + 1
        st["profiles"][str(profile)] = st["profiles"].get(str(profile), 0) + 1
        self.batch_requests.observe(requests, tags=self.tags)
        self.batch_rows.observe(rows, tags=self.tags)
        self.profiles.inc(1, tags={**self.tags, "profile": str(profile)})


def _replica_identity(device: torch.device, startup_s: float) -> dict[str, Any]:
    """Which replica answered /stats and on which GPU: with several replicas, a client tells them
    apart (and checks that each has its own device) from this."""
    try:
        replica = serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - outside a Serve replica (tests calling the class directly)
        replica = f"pid-{os.getpid()}"
    identity: dict[str, Any] = {"replica_id": replica, "pid": os.getpid(), "startup_s": startup_s,
                                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        identity["gpu"] = {"name": props.name, "uuid": str(getattr(props, "uuid", "")),
                           "pci_bus_id": getattr(props, "pci_bus_id", None)}
    return identity


def _memory(device: torch.device) -> dict[str, Any]:
    """This replica's GPU memory now (PyTorch's allocator: engines, CUDA graphs, buffers)."""
    if device.type != "cuda":
        return {}
    return {"gpu_memory_allocated_mib": torch.cuda.memory_allocated(device) / 2**20,
            "gpu_memory_reserved_mib": torch.cuda.memory_reserved(device) / 2**20,
            "gpu_max_memory_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20}


@serve.deployment(name="flexrt")
@serve.ingress(api)
class FlexrtDeployment:
    """One replica: loads the artifact, warms each profile at its opt shape, serves v2."""

    def __init__(self, config: dict[str, Any]) -> None:
        started = time.perf_counter()
        self.config = ServeConfig.from_mapping(config)
        self.ready = False
        self.device = torch.device(self.config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ServingError("--device cuda: this replica sees no CUDA device (is num_gpus=1 granted?)")
        artifact = flexrt.load(self.config.artifact)
        self.signature = protocol.ModelSignature.from_artifact(self.config.name, artifact)
        self.module = artifact.module() if self.config.backend == "flexrt" else self._reference()
        self.plan = BatchPlan.resolve(self.signature, dict(self.config.batch_dims)) if self.config.batching else None
        # Every model call (the warm-up's too) runs on this one thread, in arrival order: one call at a
        # time per replica (the module keeps state). With a thread per call from asyncio's default pool,
        # unbatched requests had queued for a lock in up to 32 threads (unordered), and each new pool
        # thread first touched CUDA under load.
        self._calls = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexrt-model")
        self._model_threads: set[int] = set()  # threads that ran the model (warm-up included): /stats
        self._batched.set_max_batch_size(self.config.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.config.batch_wait_ms / 1000)
        self.metrics = _Metrics(self.config.name)
        self._calls.submit(self._warm_up).result()  # captures on the thread that replays them
        self.metrics.stats["model_ms"] = 0.0  # /stats counts requests' model calls, not the warm-up's
        self.identity = _replica_identity(self.device, time.perf_counter() - started)
        self.ready = True
        logger.info("serving %s as %r (batch dims %s)", self.config.artifact, self.config.name, dict(self.config.batch_dims))

    def _reference(self) -> Any:
        """The A/B peer: the same model in PyTorch (eager) or torch.compile'd, on this device."""
        import importlib

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
                    self._execute({s.name: torch.zeros(shape[s.name], dtype=s.dtype) for s in self.signature.inputs}, k)
            except Exception as e:
                raise ServingError(f"warm-up of profile {k} failed: {e}") from e

    # -- running -----------------------------------------------------------------------------------

    def _execute(self, inputs: dict[str, torch.Tensor], profile: int) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            self._model_threads.add(threading.get_ident())
            start = time.perf_counter()  # copies in, the model, copies out (synchronous): the device's share
            args = [inputs[n].to(self.device, non_blocking=True) for n in self.signature.input_names]
            result = self.module(*args)
            outputs = protocol.outputs_by_name(result, self.signature)
            outputs = {n: t.to("cpu") for n, t in outputs.items()}
            self.metrics.stats["model_ms"] += (time.perf_counter() - start) * 1000
        return outputs

    def _run_batch(self, items: list[_Item]) -> list[dict[str, torch.Tensor] | BaseException]:
        return run_chunks(
            items, lambda it: it.request.shapes, lambda it: it.request.inputs, self.plan, self.signature,
            self._execute, pad=self.config.padding, on_chunk=self.metrics.chunk,
        )

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batched(self, items: list[_Item]) -> list[Any]:
        now = time.perf_counter()
        for it in items:
            self.metrics.queue.observe((now - it.enqueued) * 1000, tags=self.metrics.tags)
            self.metrics.stats["queue_ms"] += (now - it.enqueued) * 1000
        return await self._in_model_thread(items)

    async def _in_model_thread(self, items: list[_Item]) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(self._calls, self._run_batch, items)

    async def run(self, request: protocol.InferRequest) -> dict[str, torch.Tensor]:
        """A validated request -> its outputs (raises its chunk's error)."""
        if self.plan is not None:
            result = await self._batched(_Item(request))
        else:
            result = (await self._in_model_thread([_Item(request)]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- DeploymentHandle path ---------------------------------------------------------------------

    async def predict(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """handle.predict.remote({name: tensor or array}) -> {output name: CPU tensor}; same checks,
        batching and accounting as HTTP; raises flexrt's InputSpecError for a bad request."""
        start = time.perf_counter()
        status = 500
        try:
            request = protocol.validate_tensors(inputs, self.signature)
            outputs = await self.run(request)
            status = 200
            return outputs
        except InputSpecError:
            status = 400
            raise
        finally:
            self._account(start, status)

    # -- HTTP ----------------------------------------------------------------------------------------

    @api.get("/v2/health/live")
    def live(self) -> JSONResponse:
        return JSONResponse({"live": True})

    @api.get("/v2/health/ready")
    def server_ready(self) -> JSONResponse:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    @api.get("/v2")
    def server_metadata(self) -> JSONResponse:
        return JSONResponse({"name": "flexrt", "version": flexrt.__version__, "extensions": ["binary_tensor_data"]})

    @api.get("/v2/models")
    def models(self) -> JSONResponse:
        return JSONResponse({"models": [self.signature.name]})

    @api.get("/v2/models/{model}")
    def model_metadata(self, model: str) -> JSONResponse:
        if model != self.signature.name:
            return _error(404, f"unknown model {model!r}; this server serves {self.signature.name!r}")
        batching = {
            "batch_dims": {n: d for n, d in self.config.batch_dims},
            "max_batch_size": self.config.max_batch_size if self.plan else 1,
            "batch_wait_ms": self.config.batch_wait_ms,
        }
        return JSONResponse(self.signature.metadata({"parameters": {"batching": batching, "device": str(self.device)}}))

    @api.get("/v2/models/{model}/ready")
    def model_ready(self, model: str) -> JSONResponse:
        if model != self.signature.name:
            return _error(404, f"unknown model {model!r}; this server serves {self.signature.name!r}")
        return JSONResponse({"name": model, "ready": self.ready}, status_code=200 if self.ready else 503)

    @api.get("/v2/models/{model}/stats")
    def model_stats(self, model: str) -> JSONResponse:
        """This replica's counts: requests run, model calls, rows, requests per call, profile picks."""
        if model != self.signature.name:
            return _error(404, f"unknown model {model!r}; this server serves {self.signature.name!r}")
        return JSONResponse({"name": model, "replica": {**self.metrics.stats, "model_threads": len(self._model_threads),
                                                        **self.identity, **_memory(self.device)}})

    @api.post("/v2/models/{model}/infer")
    async def infer(self, model: str, http: Request) -> Response:
        start = time.perf_counter()
        status = 200
        try:
            if model != self.signature.name:
                status = 404
                return _error(404, f"unknown model {model!r}; this server serves {self.signature.name!r}")
            body = await http.body()
            try:
                header = http.headers.get(protocol.BINARY_HEADER)
                if header is not None and not header.strip().isdigit():
                    raise RequestError(f"{protocol.BINARY_HEADER} must be an integer, got {header!r}")
                request = protocol.parse_infer_request(body, self.signature, int(header) if header is not None else None)
            except InputSpecError as e:
                status = 400
                return _error(400, str(e))
            try:
                outputs = await self.run(request)
            except InputSpecError as e:  # the engine's own check disagreed with ours: still the request's fault
                status = 400
                return _error(400, str(e))
            except Exception as e:
                logger.exception("inference failed")
                status = 500
                return _error(500, f"inference failed: {type(e).__name__}: {e}")
            try:
                body, header_length = protocol.encode_infer_response(self.signature, outputs, request)
            except OutputEncodingError as e:
                status = 500
                return _error(500, str(e))
            if header_length is None:
                return Response(body, media_type="application/json")
            return Response(body, media_type="application/octet-stream", headers={protocol.BINARY_HEADER: str(header_length)})
        finally:
            self._account(start, status)

    def _account(self, start: float, status: int) -> None:
        """One answered request in the metrics and in /stats (HTTP and handle alike)."""
        self.metrics.requests.inc(1, tags={**self.metrics.tags, "code": str(status)})
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.metrics.latency.observe(elapsed_ms, tags=self.metrics.tags)
        # sums in /stats: a client's latency minus replica_ms is the time spent outside the replica
        self.metrics.stats["answered"] += 1
        self.metrics.stats["replica_ms"] += elapsed_ms


def deployment_options(config: ServeConfig) -> dict[str, Any]:
    """Ray Serve options from a ServeConfig: resources, replicas or autoscaling, queue bounds, drain."""
    gpu = config.device.startswith("cuda")
    options: dict[str, Any] = {
        "name": f"flexrt-{config.name}",
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": 1 / config.replicas_per_gpu if gpu else 0},
        "max_ongoing_requests": config.ongoing,
        "max_queued_requests": config.max_queue,
        "graceful_shutdown_timeout_s": config.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": 0.5,
        "logging_config": {"enable_access_log": config.access_log},
    }
    if config.replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas,
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": max(1, config.max_batch_size if config.batching else 2),
        }
    else:
        options["num_replicas"] = int(config.replicas)
    try:
        from ray.serve.config import BackpressureConfig
    except ImportError:  # Ray < 2.5x: 503 without Retry-After
        logger.info("this Ray has no BackpressureConfig: 503s will carry no Retry-After header")
    else:
        options["backpressure_config"] = BackpressureConfig(status_code=503, retry_after_s=config.retry_after_s)
    return options


def build(config: ServeConfig) -> Any:
    """The bound Ray Serve application for `serve.run` (or `serve run`/`serve deploy` via flexrt.serving:app)."""
    return FlexrtDeployment.options(**deployment_options(config)).bind(config.to_mapping())
