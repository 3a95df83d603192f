"""Seed 000 / 001 "Dynamic shapes with Torch-TensorRT", run with flexrt.

Static and dynamic compilation with ir="dynamo", custom torch.export constraints compiled with
dynamo.compile, and ir="torch_compile" with mark_dynamic. Runs on CUDA when present, else CPU.
"""

import torch
import torch.nn as nn

import flexrt as torch_tensorrt

device = "cuda" if torch.cuda.is_available() else "cpu"
# float32 engines on CUDA use TF32 for matrix products and convolutions, as TensorRT's do by default
# (compile with disable_tf32=True for strict float32): compare with eager to a relative tolerance
TOL = 2e-3 if device == "cuda" else 1e-4


def close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return out.shape == ref.shape and float((out - ref).norm()) <= TOL * float(ref.norm())


class MyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def check(name: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    err = float((out - ref).norm() / ref.norm())
    assert close(out, ref), (name, tuple(out.shape), err)
    print(f"{name}: shape {tuple(out.shape)}, relative error vs eager {err:.1e}")


torch.manual_seed(0)
model = MyModel().eval().to(device)

# Compile with static shapes
inputs = torch_tensorrt.Input(shape=[1, 3, 224, 224], dtype=torch.float32)
trt_gm = torch_tensorrt.compile(model, ir="dynamo", inputs=inputs)
x = torch.randn(1, 3, 224, 224, device=device)
with torch.no_grad():
    check("static", trt_gm(x), model(x))

# or compile with dynamic shapes
inputs = torch_tensorrt.Input(min_shape=[1, 3, 224, 224], opt_shape=[4, 3, 224, 224], max_shape=[8, 3, 224, 224], dtype=torch.float32)
trt_gm = torch_tensorrt.compile(model, ir="dynamo", inputs=inputs)
with torch.no_grad():
    for batch in (1, 4, 6, 8):
        x = torch.randn(batch, 3, 224, 224, device=device)
        check(f"dynamic batch {batch}", trt_gm(x), model(x))

# Custom dynamic shape constraints: export first, then compile the ExportedProgram.
# (An example batch of 2: torch.export specialises a dim whose example size is 0 or 1.)
inputs = torch.randn((2, 3, 224, 224), dtype=torch.float32, device=device)
batch = torch.export.Dim("batch", min=1, max=8)
exp_program = torch.export.export(model, (inputs,), dynamic_shapes=({0: batch},))
trt_gm = torch_tensorrt.dynamo.compile(exp_program, [inputs])
with torch.no_grad():
    check("exported program, batch 2", trt_gm(inputs), model(inputs))
    x5 = torch.randn(5, 3, 224, 224, device=device)
    check("exported program, batch 5", trt_gm(x5), model(x5))

# Dynamic shapes with ir="torch_compile": mark_dynamic gives the range, compilation happens at the
# first call. (The seed marks a batch of 1; torch.compile specialises sizes 0 and 1, so the tensor
# that is marked must have a size of at least 2 there.)
inputs = torch.randn((2, 3, 224, 224), dtype=torch.float32, device=device)
# This indicates the dimension 0 is dynamic and the range is [1, 8]
torch._dynamo.mark_dynamic(inputs, 0, min=1, max=8)
trt_gm = torch_tensorrt.compile(model, ir="torch_compile", inputs=[inputs])
with torch.no_grad():
    check("torch_compile, batch 2", trt_gm(inputs), model(inputs))
    # No recompilation of engines with modified batch size
    inputs_bs4 = torch.randn((4, 3, 224, 224), dtype=torch.float32, device=device)
    check("torch_compile, batch 4", trt_gm(inputs_bs4), model(inputs_bs4))
print("dynamic_shapes: OK")
