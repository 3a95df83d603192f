"""Stage 6, runtime: load engines and run them — profiles, checks, contexts, runners, CUDA graphs.

Imports no compile-time code (trace, lower, partition, build, compiler): a loaded artifact runs
with this package, `ir`, `format`, `spec`, `settings` and `errors` alone.
"""

from flexrt.runtime.context import ExecutionContext
from flexrt.runtime.engine import Engine
from flexrt.runtime.fallback import Fallback
from flexrt.runtime.module import CompiledModule
from flexrt.runtime.profile_selection import optimization_profile
from flexrt.runtime.runner import Runner

__all__ = ["CompiledModule", "Engine", "ExecutionContext", "Fallback", "Runner", "optimization_profile"]
