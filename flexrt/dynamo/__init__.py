"""`flexrt.dynamo`: the torch.export front end, as `torch_tensorrt.dynamo`."""

from flexrt.compiler.api import dynamo_compile as compile
from flexrt.compiler.api import dynamo_trace as trace

__all__ = ["compile", "trace"]
