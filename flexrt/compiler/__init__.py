"""The compiler: the entry points and the pipeline that drives the stages (not itself a stage)."""

from flexrt.compiler.api import build_engine, compile_module, dynamo_compile, dynamo_trace

__all__ = ["build_engine", "compile_module", "dynamo_compile", "dynamo_trace"]
