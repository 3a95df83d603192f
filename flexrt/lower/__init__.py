"""Graph passes between trace and partition; the order lives in `pipeline.PASSES`."""

from flexrt.lower.pipeline import PASSES, lower

__all__ = ["PASSES", "lower"]
