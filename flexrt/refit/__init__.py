"""Refit: put new weights into a compiled module without building anything (Torch-TensorRT's
`torch_tensorrt.dynamo.refit_module_weights`)."""

from flexrt.refit.refit import refit_module_weights

__all__ = ["refit_module_weights"]
