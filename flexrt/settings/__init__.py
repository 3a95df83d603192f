"""Settings: `CompileSettings` (changes the engine) and `RuntimeOptions` (how it runs), parsed once."""

from flexrt.settings.compile import BuildFailure, CompileSettings
from flexrt.settings.parse import (
    RUNTIME_NAMES,
    SETTING_NAMES,
    TENSORRT_ONLY_OPTIONS,
    build_settings,
    default_device,
    parse_options,
)
from flexrt.settings.runtime import OutOfRange, RuntimeOptions

__all__ = [
    "RUNTIME_NAMES",
    "SETTING_NAMES",
    "TENSORRT_ONLY_OPTIONS",
    "BuildFailure",
    "CompileSettings",
    "OutOfRange",
    "RuntimeOptions",
    "build_settings",
    "default_device",
    "parse_options",
]
