"""Stage 1, spec: what shapes a compiled model accepts (`Input`, `ShapeRange`, `Profile`)."""

from flexrt.spec.input import UNBOUNDED, Input, ShapeRange, as_dtype, as_shape, finite_or, random_tensor
from flexrt.spec.profile import Profile, resolve_profiles, union_range, union_specs

__all__ = [
    "UNBOUNDED",
    "Input",
    "Profile",
    "ShapeRange",
    "as_dtype",
    "as_shape",
    "finite_or",
    "random_tensor",
    "resolve_profiles",
    "union_range",
    "union_specs",
]
