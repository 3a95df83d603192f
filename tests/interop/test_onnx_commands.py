"""The trtexec and polygraphy command lines for several profiles and static inputs (no export needed)."""

from __future__ import annotations

import flexrt
from flexrt.interop.onnx import polygraphy_command, trtexec_commands


def test_command_lines_name_only_dynamic_inputs_and_one_group_per_profile():
    p0 = flexrt.Profile().add("x", min=(1, 3), opt=(1, 3), max=(1, 3)).add("k", min=(4,), opt=(4,), max=(4,))
    p1 = flexrt.Profile().add("x", min=(1, 3), opt=(8, 3), max=(32, 3)).add("k", min=(4,), opt=(4,), max=(4,))
    assert trtexec_commands("m.onnx", [p0, p1]) == [
        "trtexec --onnx=m.onnx --minShapes=x:1x3 --optShapes=x:1x3 --maxShapes=x:1x3",
        "trtexec --onnx=m.onnx --minShapes=x:1x3 --optShapes=x:8x3 --maxShapes=x:32x3",
    ]
    assert polygraphy_command("m.onnx", [p0, p1]) == (
        "polygraphy run m.onnx --trt --onnxrt"
        " --trt-min-shapes x:[1,3] --trt-opt-shapes x:[1,3] --trt-max-shapes x:[1,3]"
        " --trt-min-shapes x:[1,3] --trt-opt-shapes x:[8,3] --trt-max-shapes x:[32,3]"
    )
    assert trtexec_commands("m.onnx", [p0]) == ["trtexec --onnx=m.onnx"]
    assert polygraphy_command("m.onnx", [p0]) == "polygraphy run m.onnx --trt --onnxrt"
