"""One frozen settings object, built once from `compile`'s keyword options and passed explicitly.

Option names and defaults follow Torch-TensorRT so that its users' code runs unchanged.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch

from flexrt.errors import InputSpecError

logger = logging.getLogger(__name__)

OutOfRange = Literal["error", "eager", "build"]

_PRECISION_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# Torch-TensorRT options that only mean something to TensorRT: accepted with a warning so that
# ported code runs, never silently.
TENSORRT_ONLY_OPTIONS = frozenset(
    {
        "workspace_size",
        "dla_sram_size",
        "dla_local_dram_size",
        "dla_global_dram_size",
        "sparse_weights",
        "hardware_compatible",
        "use_python_runtime",
        "use_fast_partitioner",
        "enable_experimental_decompositions",
        "num_avg_timing_iters",
        "max_aux_streams",
        "version_compatible",
        "assume_dynamic_shape_support",
        "use_explicit_typing",
        "immutable_weights",
        "refit_identical_engine_weights",
        "strip_engine_weights",
        "engine_capability",
        "debug",
        "pass_through_build_failures",
        "make_refittable",
        "timing_cache_path",
        "lazy_engine_init",
        "allow_shape_tensors",
        "tiling_optimization_level",
        "l2_limit_for_tiling",
        "use_distributed_mode_trace",
        "offload_module_to_cpu",
        "enable_weight_streaming",
        "engine_cache_size",
        "custom_engine_cache",
    }
)


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """Everything that steers a compilation. Never mutated; derive a new one with `replace`."""

    enabled_precisions: frozenset[torch.dtype] = frozenset({torch.float32})
    truncate_long_and_double: bool = False
    torch_executed_ops: frozenset[str] = frozenset()
    min_block_size: int = 5
    require_full_compilation: bool = False
    device: torch.device = torch.device("cpu")
    dryrun: bool = False
    cuda_graphs: bool = True
    cuda_graph_cache_size: int = 32
    optimization_level: int = 3
    cache_dir: str | None = None
    on_out_of_range: OutOfRange = "error"
    disable_tf32: bool = False  # as TensorRT: float32 matmuls and convolutions may use TF32 on CUDA

    @property
    def engine_dtype(self) -> torch.dtype:
        """The precision engines are built in: the narrowest enabled floating type."""
        if torch.float16 in self.enabled_precisions:
            return torch.float16
        if torch.bfloat16 in self.enabled_precisions:
            return torch.bfloat16
        return torch.float32

    @property
    def use_cuda_graphs(self) -> bool:
        return self.cuda_graphs and self.device.type == "cuda"

    def replace(self, **changes: Any) -> CompileSettings:
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view, for logs, the artifact manifest and `flexrt inspect`."""
        return {
            "enabled_precisions": sorted(str(d).replace("torch.", "") for d in self.enabled_precisions),
            "truncate_long_and_double": self.truncate_long_and_double,
            "torch_executed_ops": sorted(self.torch_executed_ops),
            "min_block_size": self.min_block_size,
            "require_full_compilation": self.require_full_compilation,
            "device": str(self.device),
            "cuda_graphs": self.cuda_graphs,
            "cuda_graph_cache_size": self.cuda_graph_cache_size,
            "optimization_level": self.optimization_level,
            "on_out_of_range": self.on_out_of_range,
            "disable_tf32": self.disable_tf32,
        }


def settings_from_description(d: Mapping[str, Any], device: torch.device) -> CompileSettings:
    """Inverse of `CompileSettings.describe`, onto the device an artifact is loaded on."""
    return CompileSettings(
        enabled_precisions=frozenset(getattr(torch, n) for n in d["enabled_precisions"]),
        truncate_long_and_double=bool(d["truncate_long_and_double"]),
        torch_executed_ops=frozenset(d["torch_executed_ops"]),
        min_block_size=int(d["min_block_size"]),
        require_full_compilation=bool(d["require_full_compilation"]),
        device=device,
        cuda_graphs=bool(d["cuda_graphs"]),
        cuda_graph_cache_size=int(d["cuda_graph_cache_size"]),
        optimization_level=int(d["optimization_level"]),
        on_out_of_range=d["on_out_of_range"],
        disable_tf32=bool(d.get("disable_tf32", False)),  # absent from artifacts written before the option existed
    )


SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(CompileSettings))


def default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _precisions(value: Any) -> frozenset[torch.dtype]:
    items = [value] if isinstance(value, (torch.dtype, str)) else list(value)
    out = set()
    for item in items:
        if isinstance(item, str):
            if item.lower() not in _PRECISION_NAMES:
                raise InputSpecError(
                    f"enabled_precisions: unknown precision {item!r}; use torch.float32, torch.float16 or torch.bfloat16"
                )
            item = _PRECISION_NAMES[item.lower()]
        if item not in (torch.float32, torch.float16, torch.bfloat16):
            raise InputSpecError(
                f"enabled_precisions: {item} is not supported; use torch.float32, torch.float16 or torch.bfloat16"
            )
        out.add(item)
    if not out:
        raise InputSpecError("enabled_precisions is empty; give at least torch.float32")
    return frozenset(out)


def _op_names(ops: Iterable[Any]) -> frozenset[str]:
    """Normalise `torch_executed_ops` entries (OpOverload, OpOverloadPacket or string) to names."""
    names = set()
    for op in [ops] if isinstance(ops, str) else ops:
        if isinstance(op, str):
            name = op
        elif hasattr(op, "_schema") or hasattr(op, "_qualified_op_name"):
            name = str(op)
        elif hasattr(op, "__name__"):
            name = f"{getattr(op, '__module__', '')}.{op.__name__}".strip(".")
        else:
            raise InputSpecError(f"torch_executed_ops: cannot interpret {op!r}; give an op such as torch.ops.aten.relu")
        names.add(name.replace("torch.ops.", "").replace("::", "."))
    return frozenset(names)


def _device(value: Any) -> torch.device:
    if isinstance(value, torch.device):
        dev = value
    elif isinstance(value, str):
        try:
            dev = torch.device(value)
        except RuntimeError:
            raise InputSpecError(f"device: cannot interpret {value!r}; give 'cpu', 'cuda', 'cuda:0' or a torch.device") from None
    elif isinstance(value, int):
        dev = torch.device("cuda", value)
    elif hasattr(value, "device_type"):  # torch_tensorrt.Device-like
        dev = torch.device(str(value.device_type), getattr(value, "gpu_id", 0))
    else:
        raise InputSpecError(f"device: cannot interpret {value!r}; give 'cpu', 'cuda', 'cuda:0' or a torch.device")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputSpecError(f"device={str(dev)!r} but CUDA is not available on this machine; use device='cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise InputSpecError(f"device: {dev.type!r} is not supported; use 'cpu' or 'cuda'")
    return dev


def build_settings(options: Mapping[str, Any], device: torch.device | None = None) -> CompileSettings:
    """Turn `compile`'s keyword options into settings; unknown names fail with a suggestion."""
    values: dict[str, Any] = {}
    options = dict(options)
    # Torch-TensorRT's engine cache options map onto flexrt's on-disk engine cache.
    trt_cache = options.pop("cache_built_engines", False) or options.pop("reuse_cached_engines", False)
    trt_cache_dir = options.pop("engine_cache_dir", None)
    options.pop("reuse_cached_engines", None)
    if (trt_cache or trt_cache_dir) and options.get("cache_dir") is None:
        options["cache_dir"] = trt_cache_dir or os.path.join(tempfile.gettempdir(), "flexrt_engine_cache")
    for name, value in options.items():
        if name in TENSORRT_ONLY_OPTIONS:
            logger.warning("option %s=%r only applies to TensorRT; flexrt ignores it", name, value)
            continue
        if name not in SETTING_NAMES:
            close = difflib.get_close_matches(name, sorted(SETTING_NAMES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {', '.join(sorted(SETTING_NAMES))}"
            raise InputSpecError(f"unknown compile option {name!r}{hint}")
        values[name] = value
    if "enabled_precisions" in values:
        values["enabled_precisions"] = _precisions(values["enabled_precisions"])
    if "torch_executed_ops" in values:
        values["torch_executed_ops"] = _op_names(values["torch_executed_ops"] or ())
    values["device"] = _device(values["device"]) if values.get("device") is not None else (device or default_device())
    if "min_block_size" in values and (not isinstance(values["min_block_size"], int) or values["min_block_size"] < 1):
        raise InputSpecError(f"min_block_size must be an integer >= 1, got {values['min_block_size']!r}")
    if values.get("on_out_of_range", "error") not in ("error", "eager", "build"):
        raise InputSpecError(
            f"on_out_of_range must be 'error', 'eager' or 'build', got {values['on_out_of_range']!r}"
        )
    level = values.get("optimization_level")
    if level is not None and (not isinstance(level, int) or not 0 <= level <= 5):
        raise InputSpecError(f"optimization_level must be an integer from 0 to 5, got {level!r}")
    if values.get("optimization_level") is None:
        values.pop("optimization_level", None)
    if values.get("cache_dir") is None:
        env_dir = os.environ.get("FLEXRT_CACHE_DIR")
        values["cache_dir"] = env_dir or None
    for flag in ("disable_tf32", "cuda_graphs", "truncate_long_and_double", "require_full_compilation", "dryrun"):
        if flag in values and not isinstance(values[flag], bool):
            raise InputSpecError(f"{flag} must be True or False, got {values[flag]!r}")
    size = values.get("cuda_graph_cache_size", 1)
    if not isinstance(size, int) or size < 1:
        raise InputSpecError(f"cuda_graph_cache_size must be an integer >= 1, got {size!r}")
    return CompileSettings(**values)
