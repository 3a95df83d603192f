"""`flexrt.dynamo`: the torch.export front end, as `torch_tensorrt.dynamo`."""

from flexrt.compiler.api import dynamo_compile as compile
from flexrt.compiler.api import dynamo_trace as trace
from flexrt.refit import refit_module_weights

__all__ = ["compile", "refit_module_weights", "trace"]
