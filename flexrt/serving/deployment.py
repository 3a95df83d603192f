"""The Ray Serve deployments: a FastAPI ingress speaking Open Inference Protocol v2 over one artifact.

Per request: parse and validate in full (400 on any error, before batching), then either run alone
(no --batch-dim) or wait in Ray's `@serve.batch` queue, where `batching.Batch` groups the batch
by shape, stacks, runs and splits. Every request gets exactly one answer: its rows, or its chunk's
error. Backpressure (503 + Retry-After) is Ray Serve's `max_queued_requests`.

Two layouts. Single tier (default): each replica answers HTTP and runs the model. Two tiers
(`--frontends N`): N CPU replicas answer HTTP, validate and batch, and send each stacked call to the
model replicas (`FlexrtModel`, one per GPU) through a DeploymentHandle. Why: a replica's Python
request path (HTTP, parsing, the batch queue, the response) costs more per request than a GPU call
of a small batch, so one replica per GPU saturated its event loop, not its GPU, and batching there
saved nothing (`benchmarks/results/serve/h200-2026-11-30e`); with front ends, request handling
scales with CPU cores while each GPU sees one call per batch.
Imports Ray: import this module only where Ray is installed (`flexrt serve`, `serve run`).
"""

# No `from __future__ import annotations` here: FastAPI reads these route signatures'
# annotations at runtime (Request must be a class, not a string, for it to be injected).

import logging
import re
import threading
import time
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

import flexrt
from flexrt.errors import InputSpecError, OutputEncodingError, RequestError
from flexrt.serving import protocol, ray_env, wire
from flexrt.serving.batching import Batch, BatchPlan, run_chunks
from flexrt.serving.config import ServeConfig
from flexrt.serving.host import ModelHost, replica_identity
from flexrt.serving.merge import MergingQueue

logger = logging.getLogger(__name__)

LATENCY_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128]

api = FastAPI(title="flexrt", description="Open Inference Protocol v2 over a flexrt artifact")


def _model_handle(model: Any) -> Any:
    """The model tier's handle: over Serve's gRPC transport between replicas (values pickled into the
    message, no object store) where the replicas accept messages as large as a batch can be
    (`ray_env` sets that before flexrt starts Ray); else over Ray actor calls, which have no such
    limit. gRPC's default of 4 MiB refused ResNet-50 batches of 16 (4.8 MB) with RESOURCE_EXHAUSTED."""
    if ray_env.grpc_limit() >= ray_env.GRPC_MESSAGE_BYTES:
        return model.options(_by_reference=False, request_serialization="pickle", response_serialization="pickle")
    logger.info("the model tier's calls go over Ray actor calls (%s is below %d)", ray_env.GRPC_LIMIT, ray_env.GRPC_MESSAGE_BYTES)
    return model


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Item:
    """One validated request waiting in the batch queue."""

    __slots__ = ("request", "enqueued")

    def __init__(self, request: protocol.InferRequest) -> None:
        self.request = request
        self.enqueued = time.perf_counter()


def _shapes(item: _Item) -> dict[str, tuple[int, ...]]:
    return item.request.shapes


def _tensors(item: _Item) -> dict[str, torch.Tensor]:
    return item.request.inputs


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

        # this replica's totals, for GET /v2/models/{name}/stats (Prometheus has the cluster's); the
        # model thread adds to them while the event loop reads them: every access holds the lock
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {"requests": 0, "calls": 0, "rows": 0, "batch_requests": {}, "batch_rows": {},
                                      "profiles": {}, "answered": 0, "replica_ms": 0.0, "queue_ms": 0.0, "model_ms": 0.0}

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._stats[name] += amount

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in self._stats.items()}

    def chunk(self, requests: int, rows: int, profile: int) -> None:
        with self._lock:
            st = self._stats
            st["requests"] += requests
            st["calls"] += 1
            st["rows"] += rows
            st["batch_requests"][str(requests)] = st["batch_requests"].get(str(requests), 0) + 1
            st["batch_rows"][str(rows)] = st["batch_rows"].get(str(rows), 0) + 1
            st["profiles"][str(profile)] = st["profiles"].get(str(profile), 0) + 1
        self.batch_requests.observe(requests, tags=self.tags)
        self.batch_rows.observe(rows, tags=self.tags)
        self.profiles.inc(1, tags={**self.tags, "profile": str(profile)})


@serve.deployment(name="flexrt")
@serve.ingress(api)
class FlexrtDeployment:
    """One replica speaking v2: runs the model itself (single tier), or, given the handle of the
    model tier (`model`), validates and batches here and sends each stacked call there."""

    def __init__(self, config: dict[str, Any], model: Any = None) -> None:
        started = time.perf_counter()
        self.config = ServeConfig.from_mapping(config)
        self.ready = False
        self.model = _model_handle(model) if model is not None else None
        if model is None:
            self.host: ModelHost | None = ModelHost(self.config)
            self.signature = self.host.signature
            self.device = self.host.device
        else:
            self.host = None
            self.signature = protocol.ModelSignature.from_file(self.config.name, self.config.artifact)
            self.device = torch.device("cpu")  # this front end's own; the model tier's is the config's
        self.plan = BatchPlan.resolve(self.signature, dict(self.config.batch_dims)) if self.config.batching else None
        self._batched.set_max_batch_size(self.config.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.config.batch_wait_ms / 1000)
        self.metrics = _Metrics(self.config.name)
        self.identity = {**replica_identity(self.device), "startup_s": time.perf_counter() - started,
                         "role": "frontend" if model is not None else "replica"}
        self.ready = True
        logger.info("serving %s as %r (batch dims %s%s)", self.config.artifact, self.config.name, dict(self.config.batch_dims),
                    ", front end of the model tier" if model is not None else "")

    # -- running -----------------------------------------------------------------------------------

    async def _remote(self, inputs: dict[str, torch.Tensor], profile: int) -> dict[str, torch.Tensor]:
        """One (stacked) call to the model tier (front end), awaited on this replica's loop, where its
        handle lives; the tensors travel as numpy arrays (`wire`). The model tier chooses the profile
        (and pads) again, for the call it merges this one into."""
        del profile
        start = time.perf_counter()
        outputs = wire.unpack(await self.model.execute.remote(wire.pack(inputs)))
        self.metrics.add(model_ms=(time.perf_counter() - start) * 1000)
        return outputs

    async def _run_batch(self, items: list[_Item]) -> list[dict[str, torch.Tensor] | BaseException]:
        """Single tier: group, stack, run and split on the model thread (one hop per batch). Front end:
        group and stack on the loop and send every call to the model tier at once (no thread)."""
        if self.host is not None:
            return await self.host.run(run_chunks, items, _shapes, _tensors, self.plan, self.signature, self.host.execute,
                                       self.config.padding, None, self.metrics.chunk)
        # unpadded: the model tier merges calls that wait for its GPU and pads what it runs
        batch = Batch.prepare(items, _shapes, _tensors, self.plan, self.signature, "none", on_chunk=self.metrics.chunk)
        await batch.run_async(self._remote)
        return batch.results()

    # One batch at a time, also in a front end: requests gather while the last batch runs, so batches
    # grow with the load. With 8 at once, a front end's batches stayed small and the model tier, whose
    # cost is per call, took more calls (H200 run t, benchmarks/results/serve/h200-2026-11-30f).
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batched(self, items: list[_Item]) -> list[Any]:
        now = time.perf_counter()
        for it in items:
            self.metrics.queue.observe((now - it.enqueued) * 1000, tags=self.metrics.tags)
            self.metrics.add(queue_ms=(now - it.enqueued) * 1000)
        return await self._run_batch(items)

    async def _model_stats(self) -> dict[str, Any]:
        """The model's own counts: this replica's, or (front end) those of one model replica. In a single
        tier the model calls' time (`model_ms`) is the host's own count; a front end times its round
        trips to the model tier itself."""
        if self.host is not None:
            return {**self.host.stats(), "model_ms": self.host.model_ms}
        return {"model_tier": await self.model.stats.remote()}

    async def run(self, request: protocol.InferRequest) -> dict[str, torch.Tensor]:
        """A validated request -> its outputs (raises its chunk's error)."""
        if self.plan is not None:
            result = await self._batched(_Item(request))
        else:
            result = (await self._run_batch([_Item(request)]))[0]
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

    def check_health(self) -> None:
        """Ray Serve's periodic check: a single-tier replica whose device keeps failing is replaced (a
        front end has no device; Ray checks the model tier's replicas themselves)."""
        if self.host is not None:
            self.host.check_health()

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
        return JSONResponse(self.signature.metadata({"parameters": {"batching": batching, "device": self.config.device}}))

    @api.get("/v2/models/{model}/ready")
    def model_ready(self, model: str) -> JSONResponse:
        if model != self.signature.name:
            return _error(404, f"unknown model {model!r}; this server serves {self.signature.name!r}")
        return JSONResponse({"name": model, "ready": self.ready}, status_code=200 if self.ready else 503)

    @api.get("/v2/models/{model}/stats")
    async def model_stats(self, model: str) -> JSONResponse:
        """This replica's counts: requests run, model calls, rows, requests per call, profile picks."""
        if model != self.signature.name:
            return _error(404, f"unknown model {model!r}; this server serves {self.signature.name!r}")
        return JSONResponse({"name": model, "replica": {**self.metrics.snapshot(), **self.identity, **(await self._model_stats())}})

    @api.post("/v2/models/{model}/infer")
    async def infer(self, model: str, http: Request) -> Response:
        start = time.perf_counter()
        status = 500  # until an answer is made: an exception escaping here is Starlette's 500, counted so
        try:
            if model != self.signature.name:
                status = 404
                return _error(404, f"unknown model {model!r}; this server serves {self.signature.name!r}")
            body = await http.body()
            try:
                header = http.headers.get(protocol.BINARY_HEADER)
                if header is not None and not re.fullmatch(r"[0-9]+", header.strip()):  # not isdigit(): it takes '²'
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
            status = 200
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
        self.metrics.add(answered=1, replica_ms=elapsed_ms)


@serve.deployment(name="flexrt-model")
class FlexrtModel:
    """The model tier of a two-tier deployment: runs the (stacked) calls its front ends send."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.host = ModelHost(ServeConfig.from_mapping(config))
        self.queue = MergingQueue(self.host)
        self.identity = replica_identity(self.host.device)
        logger.info("model tier of %s ready on %s", self.host.config.name, self.host.device)

    async def execute(self, inputs: dict[str, wire.Packed]) -> dict[str, wire.Packed]:
        """A front end's (stacked) call, inputs and outputs as `wire` packs them; calls that wait for
        the model thread run merged (`merge`)."""
        return wire.pack(await self.queue.submit(wire.unpack(inputs)))

    def stats(self) -> dict[str, Any]:
        """Calls received from the front ends, and the model calls they became."""
        return {**self.identity, **self.host.stats(), "calls_received": self.queue.received}

    def check_health(self) -> None:
        """Ray Serve's periodic check: a replica whose device keeps failing is replaced."""
        self.host.check_health()


def _options(config: ServeConfig, name: str, resources: dict[str, float], ongoing: int, queue: int) -> dict[str, Any]:
    return {
        "name": name,
        "ray_actor_options": resources,
        "max_ongoing_requests": ongoing,
        "max_queued_requests": queue,
        "graceful_shutdown_timeout_s": config.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": 0.5,
        "logging_config": {"enable_access_log": config.access_log},
    }


def _backpressure(options: dict[str, Any], config: ServeConfig) -> dict[str, Any]:
    """503 + Retry-After past the queue bound, where this Ray can say it."""
    try:
        from ray.serve.config import BackpressureConfig
    except ImportError:  # Ray < 2.5x: 503 without Retry-After
        logger.info("this Ray has no BackpressureConfig: 503s will carry no Retry-After header")
    else:
        options["backpressure_config"] = BackpressureConfig(status_code=503, retry_after_s=config.retry_after_s)
    return options


def deployment_options(config: ServeConfig) -> dict[str, Any]:
    """Ray Serve options of the model's replicas: resources, replicas or autoscaling, queue bounds, drain.
    Behind front ends, their queue is the front ends' (each holds at most `ongoing` requests) and
    they take every call sent (the model thread orders them)."""
    gpu = config.device.startswith("cuda")
    resources = {"num_cpus": config.num_cpus, "num_gpus": 1 / config.replicas_per_gpu if gpu else 0}
    if config.frontends:
        options = _options(config, f"flexrt-{config.name}-model", resources, max(64, config.frontends * config.ongoing), -1)
        options["logging_config"] = {"enable_access_log": False}  # a line per internal call; the front ends log requests
    else:
        options = _backpressure(_options(config, f"flexrt-{config.name}", resources, config.ongoing, config.max_queue), config)
    if config.replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas,
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": max(1, config.max_batch_size if config.batching else 2),
        }
    else:
        options["num_replicas"] = int(config.replicas)
    return options


def frontend_options(config: ServeConfig) -> dict[str, Any]:
    """Ray Serve options of the front ends (`--frontends N`): CPU replicas, the queue bound and drain."""
    options = _options(config, f"flexrt-{config.name}", {"num_cpus": config.num_cpus, "num_gpus": 0},
                       config.ongoing, config.max_queue)
    return {**_backpressure(options, config), "num_replicas": config.frontends}


def build(config: ServeConfig) -> Any:
    """The bound Ray Serve application for `serve.run` (or `serve run`/`serve deploy` via flexrt.serving:app)."""
    if not config.frontends:
        return FlexrtDeployment.options(**deployment_options(config)).bind(config.to_mapping())
    model = FlexrtModel.options(**deployment_options(config)).bind(config.to_mapping())
    return FlexrtDeployment.options(**frontend_options(config)).bind(config.to_mapping(), model)
