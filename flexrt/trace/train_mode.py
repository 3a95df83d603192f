"""Models handed over in training mode are compiled with inference semantics, with a warning.

flexrt's engines are inference-only (frozen weights, no buffer updates), and a model built from a
config is in training mode until `.eval()`: BatchNorm would update its running statistics (and its
0-dim `num_batches_tracked` counter) and Dropout would drop at random on every call, neither of which
an inference engine can mean. So tracing runs the model in eval mode and says which modules would
have behaved differently; the user's model is left in the mode it came in.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

# modules whose forward differs between train and eval mode
_MODE_DEPENDENT = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.modules.dropout._DropoutNd,
)


def train_mode_modules(model: torch.nn.Module) -> list[str]:
    """Names of submodules in training mode whose forward depends on it (BatchNorm, Dropout, ...)."""
    return [name or type(m).__name__ for name, m in model.named_modules() if m.training and isinstance(m, _MODE_DEPENDENT)]


@contextlib.contextmanager
def eval_semantics(model: torch.nn.Module) -> Iterator[None]:
    """Run the body with every submodule in eval mode; warn if any mode-dependent one was training."""
    modes = {m: m.training for m in model.modules()}
    names = train_mode_modules(model)
    if names:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        warnings.warn(
            f"flexrt: the model is in training mode; compiling it with inference (eval) semantics, so "
            f"{shown} behave as after model.eval() (BatchNorm uses its running statistics, Dropout is off). "
            "Call model.eval() before compiling to silence this.",
            stacklevel=3,
        )
    try:
        model.eval()
        yield
    finally:
        for m, training in modes.items():
            m.training = training
