"""What to serve and how: one dataclass shared by `flexrt serve`, `serve run` args and YAML configs.

Pure (no Ray) so that options are checked before any Ray process is started.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from flexrt.errors import ServingError
from flexrt.serving.batching import PAD_POLICIES, WarmUpSizes, parse_batch_dims, parse_warm_up_sizes

BACKENDS = ("flexrt", "eager", "torch_compile")


def _int(value: Any, what: str, minimum: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ServingError(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, float) and not value.is_integer():
        raise ServingError(f"{what} must be an integer, got {value!r}")
    if n < minimum:
        raise ServingError(f"{what} must be >= {minimum}, got {n}")
    return n


def _float(value: Any, what: str, minimum: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ServingError(f"{what} must be a number, got {value!r}") from None
    if not x >= minimum:
        raise ServingError(f"{what} must be >= {minimum}, got {value!r}")
    return x


def _bool(value: Any, what: str) -> bool:
    """A flag from Python or from `serve run k=v` strings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ServingError(f"{what} must be true or false, got {value!r}")


def _pad(value: Any) -> str:
    """A pad policy; booleans (and "true"/"false") as earlier releases took them: pad to opt, or not."""
    if isinstance(value, bool):
        return "opt" if value else "none"
    text = str(value).strip().lower()
    return {"true": "opt", "1": "opt", "yes": "opt", "false": "none", "0": "none", "no": "none"}.get(text, text)


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Every option of `flexrt serve`; `from_mapping` accepts the strings `serve run k=v` passes."""

    artifact: str
    name: str = ""
    device: str = "cpu"
    replicas: int | str = 1  # an int, or "auto" (Ray Serve autoscaling between min and max replicas)
    min_replicas: int = 1
    max_replicas: int = 4
    # replicas sharing one GPU (Ray's fractional num_gpus = 1/K): a replica's Python request handling
    # (HTTP, decoding, batching) is one process's worth of CPU, so K processes keep one GPU busier
    replicas_per_gpu: int = 1
    # CPU replicas in front of the model's (0: each model replica answers HTTP itself). They take HTTP,
    # validate and batch, and send one call per stacked batch to a model replica: request handling
    # then grows with CPU cores instead of model replicas, and a GPU sees one call per batch
    frontends: int = 0
    max_batch_size: int = 8  # requests per call (Ray's @serve.batch counts requests)
    batch_wait_ms: float = 5.0
    batch_dims: tuple[tuple[str, int], ...] = ()
    max_queue: int = 256  # requests waiting for a replica, per caller (proxy); beyond: 503
    max_ongoing: int = 0  # per replica; 0 = 2 * max_batch_size (at least 8)
    retry_after_s: float = 1.0
    # pad a stacked batch's rows: "buckets" (next power of two: bounds the shapes CUDA graphs capture),
    # "opt" (up to the profile's opt batch), "none"; "auto" is buckets on CUDA, none on CPU
    pad: str = "auto"
    # sizes a dynamic dim takes in requests (e.g. BERT's sequence lengths): the replica warms every
    # bucket at each before serving, so that no CUDA graph is captured while requests wait
    warm_up_sizes: WarmUpSizes = ()
    num_cpus: float = 1.0
    graceful_shutdown_timeout_s: float = 30.0
    # Ray Serve's access log line per request (a replica's log file); off saves a little per request
    access_log: bool = True
    # A/B reference: run `reference_model` (MODULE:CALLABLE -> nn.Module) in PyTorch ("eager") or
    # through torch.compile ("torch_compile") behind the same protocol, checks and batching.
    backend: str = "flexrt"
    reference_model: str = ""

    def __post_init__(self) -> None:
        if not self.artifact:
            raise ServingError("no artifact given: serve needs the path of a saved flexrt model (.ep)")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ServingError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.replicas != "auto":
            _int(self.replicas, "--replicas", 1)
        _int(self.frontends, "--frontends", 0)
        if self.backend not in BACKENDS:
            raise ServingError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend != "flexrt" and ":" not in self.reference_model:
            raise ServingError(f"backend {self.backend!r} needs reference_model=MODULE:CALLABLE (returning the nn.Module)")
        if self.pad not in ("auto", *PAD_POLICIES):
            raise ServingError(f"pad must be one of {('auto', *PAD_POLICIES)}, got {self.pad!r}")
        if self.replicas_per_gpu > 1 and not self.device.startswith("cuda"):
            raise ServingError(f"--replicas-per-gpu {self.replicas_per_gpu} needs --device cuda (on cpu, use --replicas)")
        if self.min_replicas > self.max_replicas:
            raise ServingError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")

    @classmethod
    def from_mapping(cls, args: Mapping[str, Any]) -> ServeConfig:
        """From `serve run flexrt.serving:app artifact=... batch_dim=x:0,mask:0` or a YAML `args:` map."""
        known = {f.name for f in dataclasses.fields(cls)} | {"batch_dim"}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ServingError(f"unknown serve option(s) {unknown}; known: {sorted(known)}")
        raw_dims = args.get("batch_dims", args.get("batch_dim", ()))
        if isinstance(raw_dims, str):
            raw_dims = [t for t in raw_dims.replace(" ", ",").split(",") if t]
        elif isinstance(raw_dims, Mapping):
            raw_dims = [f"{k}:{v}" for k, v in raw_dims.items()]
        dims = parse_batch_dims([t if isinstance(t, str) else f"{t[0]}:{t[1]}" for t in raw_dims])
        raw_sizes = args.get("warm_up_sizes", ())
        if isinstance(raw_sizes, str):
            raw_sizes = raw_sizes.replace(";", " ").split()
        artifact = str(args.get("artifact", ""))
        replicas = args.get("replicas", 1)
        replicas = "auto" if str(replicas).lower() == "auto" else _int(replicas, "replicas", 1)
        return cls(
            artifact=artifact,
            name=str(args.get("name") or default_name(artifact)),
            device=str(args.get("device", "cpu")),
            replicas=replicas,
            min_replicas=_int(args.get("min_replicas", 1), "min_replicas", 0),
            max_replicas=_int(args.get("max_replicas", 4), "max_replicas", 1),
            replicas_per_gpu=_int(args.get("replicas_per_gpu", 1), "replicas_per_gpu", 1),
            frontends=_int(args.get("frontends", 0), "frontends", 0),
            max_batch_size=_int(args.get("max_batch_size", 8), "max_batch_size", 1),
            batch_wait_ms=_float(args.get("batch_wait_ms", 5.0), "batch_wait_ms", 0.0),
            batch_dims=tuple(dims.items()),
            max_queue=_int(args.get("max_queue", 256), "max_queue", 1),
            max_ongoing=_int(args.get("max_ongoing", 0), "max_ongoing", 0),
            retry_after_s=_float(args.get("retry_after_s", 1.0), "retry_after_s", 0.0),
            pad=_pad(args.get("pad", "auto")),
            warm_up_sizes=parse_warm_up_sizes(list(raw_sizes)),
            num_cpus=_float(args.get("num_cpus", 1.0), "num_cpus", 0.0),
            graceful_shutdown_timeout_s=_float(args.get("graceful_shutdown_timeout_s", 30.0), "graceful_shutdown_timeout_s", 0.0),
            access_log=_bool(args.get("access_log", True), "access_log"),
            backend=str(args.get("backend", "flexrt")),
            reference_model=str(args.get("reference_model", "")),
        )

    def to_mapping(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["batch_dims"] = [f"{n}:{k}" for n, k in self.batch_dims]
        d["warm_up_sizes"] = [f"{n}:{k}=" + ",".join(map(str, v)) for n, k, v in self.warm_up_sizes]
        return d

    @property
    def ongoing(self) -> int:
        return self.max_ongoing or max(8, 2 * self.max_batch_size)

    @property
    def http_replicas(self) -> int:
        """The replicas that answer HTTP (each with a port under direct ingress): the front ends, else
        the model's replicas (autoscaled: as many as it starts with)."""
        return self.frontends or (self.min_replicas if self.replicas == "auto" else int(self.replicas))

    @property
    def padding(self) -> str:
        """The pad policy in effect: "auto" resolved for the device."""
        if self.pad != "auto":
            return self.pad
        return "buckets" if self.device.startswith("cuda") else "none"

    @property
    def batching(self) -> bool:
        return bool(self.batch_dims)


def default_name(artifact: str) -> str:
    """model.ep -> 'model': the name in the URL /v2/models/{name}."""
    base = os.path.basename(str(artifact)) or "model"
    return base.split(".")[0] or "model"
