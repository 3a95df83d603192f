"""`compile`'s keyword options -> (`CompileSettings`, `RuntimeOptions`), each value checked once.

Unknown names fail with a suggestion; Torch-TensorRT's TensorRT-only options are accepted with a
warning so that ported code runs, never silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from flexrt.errors import InputSpecError
from flexrt.settings.compile import CompileSettings
from flexrt.settings.runtime import RuntimeOptions

logger = logging.getLogger(__name__)

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
        "refit_identical_engine_weights",
        "strip_engine_weights",
        "engine_capability",
        "debug",
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

# Torch-TensorRT's switches for refittable engines: every flexrt engine can be refitted
# (`flexrt.dynamo.refit_module_weights`), so they change nothing and are accepted quietly.
REFIT_OPTIONS = frozenset({"make_refittable", "immutable_weights"})

SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(CompileSettings))
RUNTIME_NAMES = frozenset(f.name for f in dataclasses.fields(RuntimeOptions))


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


def parse_options(options: Mapping[str, Any], device: torch.device | None = None) -> tuple[CompileSettings, RuntimeOptions]:
    """Split `compile`'s keyword options into engine settings and run-time options, each checked."""
    values: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    options = dict(options)
    # Torch-TensorRT's engine cache options map onto flexrt's on-disk engine cache.
    trt_cache = options.pop("cache_built_engines", False) or options.pop("reuse_cached_engines", False)
    trt_cache_dir = options.pop("engine_cache_dir", None)
    options.pop("reuse_cached_engines", None)
    if (trt_cache or trt_cache_dir) and options.get("cache_dir") is None:
        options["cache_dir"] = trt_cache_dir or os.path.join(tempfile.gettempdir(), "flexrt_engine_cache")
    if "pass_through_build_failures" in options:  # Torch-TensorRT's name for on_build_failure
        through = options.pop("pass_through_build_failures")
        if not isinstance(through, bool):
            raise InputSpecError(f"pass_through_build_failures must be True or False, got {through!r}")
        options.setdefault("on_build_failure", "error" if through else "eager")
    known = sorted((SETTING_NAMES | RUNTIME_NAMES) - {"_disabled_passes"})
    for name, value in options.items():
        if name in TENSORRT_ONLY_OPTIONS:
            logger.warning("option %s=%r only applies to TensorRT; flexrt ignores it", name, value)
        elif name in REFIT_OPTIONS:
            logger.debug("option %s=%r: every flexrt engine can be refitted; nothing to set", name, value)
        elif name in RUNTIME_NAMES:
            runtime[name] = value
        elif name in SETTING_NAMES:
            values[name] = value
        else:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {', '.join(known)}"
            raise InputSpecError(f"unknown compile option {name!r}{hint}")
    if "enabled_precisions" in values:
        values["enabled_precisions"] = _precisions(values["enabled_precisions"])
    if "torch_executed_ops" in values:
        values["torch_executed_ops"] = _op_names(values["torch_executed_ops"] or ())
    values["device"] = _device(values["device"]) if values.get("device") is not None else (device or default_device())
    if "min_block_size" in values and (not isinstance(values["min_block_size"], int) or values["min_block_size"] < 1):
        raise InputSpecError(f"min_block_size must be an integer >= 1, got {values['min_block_size']!r}")
    if values.get("on_build_failure", "error") not in ("error", "eager"):
        raise InputSpecError(f"on_build_failure must be 'error' or 'eager', got {values['on_build_failure']!r}")
    workers = values.get("build_workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise InputSpecError(f"build_workers must be an integer >= 0 (0: automatic), got {workers!r}")
    level = values.get("optimization_level")
    if level is not None and (not isinstance(level, int) or not 0 <= level <= 5):
        raise InputSpecError(f"optimization_level must be an integer from 0 to 5, got {level!r}")
    if values.get("optimization_level") is None:
        values.pop("optimization_level", None)
    if values.get("cache_dir") is None:
        env_dir = os.environ.get("FLEXRT_CACHE_DIR")
        values["cache_dir"] = env_dir or None
    for flag in ("disable_tf32", "truncate_long_and_double", "require_full_compilation", "dryrun"):
        if flag in values and not isinstance(values[flag], bool):
            raise InputSpecError(f"{flag} must be True or False, got {values[flag]!r}")
    if "_disabled_passes" in values:
        values["_disabled_passes"] = frozenset(values["_disabled_passes"])
    return CompileSettings(**values), RuntimeOptions(**runtime)


def build_settings(options: Mapping[str, Any], device: torch.device | None = None) -> CompileSettings:
    """The engine settings of `compile`'s keyword options (run-time options are checked, then left out)."""
    return parse_options(options, device)[0]
