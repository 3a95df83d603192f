"""Seed 001 "Saving and Loading Models with Dynamic Shapes": Method 1, Method 2, several dynamic
dims, keyword inputs. Artifacts go to a temporary folder. Runs on CUDA or CPU."""

import os
import tempfile

import torch
import torch.nn as nn

import flexrt as torch_tensorrt

device = "cuda" if torch.cuda.is_available() else "cpu"
# float32 engines on CUDA use TF32 for matrix products and convolutions, as TensorRT's do by default
# (compile with disable_tf32=True for strict float32): compare with eager to a relative tolerance
TOL = 2e-3 if device == "cuda" else 1e-4


def close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return out.shape == ref.shape and float((out - ref).norm()) <= TOL * float(ref.norm())
workdir = tempfile.mkdtemp(prefix="flexrt-example-")


class MyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


torch.manual_seed(0)
model = MyModel().eval().to(device)

# Method 1: dynamic shapes inferred from the torch_tensorrt.Input given to compile and save
inputs = [
    torch_tensorrt.Input(
        min_shape=(1, 3, 224, 224),
        opt_shape=(8, 3, 224, 224),
        max_shape=(32, 3, 224, 224),
        dtype=torch.float32,
        name="x",  # Optional: provides better dimension naming
    )
]
trt_model = torch_tensorrt.compile(model, ir="dynamo", arg_inputs=inputs)
path = os.path.join(workdir, "model.ep")
torch_tensorrt.save(trt_model, path, arg_inputs=inputs)
loaded_model = torch_tensorrt.load(path).module()
for batch in (4, 16):
    x = torch.randn(batch, 3, 224, 224).to(device)
    assert close(loaded_model(x), model(x))
    print(f"method 1: loaded model runs batch {batch}")

# Method 2: explicit torch.export.Dim in dynamic_shapes
example_input = torch.randn((2, 3, 224, 224)).to(device)
dyn_batch = torch.export.Dim("batch", min=1, max=32)
dynamic_shapes = {"x": {0: dyn_batch}}
exp_program = torch.export.export(model, (example_input,), dynamic_shapes=dynamic_shapes, strict=False)
trt_model = torch_tensorrt.dynamo.compile(
    exp_program,
    arg_inputs=[torch_tensorrt.Input(min_shape=(1, 3, 224, 224), opt_shape=(8, 3, 224, 224), max_shape=(32, 3, 224, 224))],
)
path = os.path.join(workdir, "model2.ep")
torch_tensorrt.save(trt_model, path, arg_inputs=[example_input], dynamic_shapes=dynamic_shapes)
loaded_model = torch_tensorrt.load(path).module()
x = torch.randn(32, 3, 224, 224).to(device)
assert close(loaded_model(x), model(x))
print("method 2: loaded model runs batch 32")

# Multiple dynamic dimensions: batch, height and width
inputs = [torch_tensorrt.Input(min_shape=(1, 3, 64, 64), opt_shape=(8, 3, 256, 256), max_shape=(16, 3, 512, 512), name="image")]
trt_model = torch_tensorrt.compile(model, ir="dynamo", arg_inputs=inputs)
path = os.path.join(workdir, "model3.ep")
torch_tensorrt.save(trt_model, path, arg_inputs=inputs)  # All 3 dims inferred!
loaded = torch_tensorrt.load(path).module()
for shape in ((4, 3, 128, 128), (12, 3, 384, 384)):
    x = torch.randn(*shape).to(device)
    assert close(loaded(x), model(x))
    print(f"multiple dynamic dims: loaded model runs {shape}")


# Saving with keyword arguments
class MaskedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 5)

    def forward(self, x, mask=None):
        return self.fc(x) * mask


masked = MaskedModel().eval().to(device)
arg_inputs = [torch_tensorrt.Input(min_shape=(1, 10), opt_shape=(4, 10), max_shape=(8, 10), name="x")]
kwarg_inputs = {"mask": torch_tensorrt.Input(min_shape=(1, 5), opt_shape=(4, 5), max_shape=(8, 5), name="mask")}
trt_model = torch_tensorrt.compile(masked, ir="dynamo", arg_inputs=arg_inputs, kwarg_inputs=kwarg_inputs)
path = os.path.join(workdir, "model4.ep")
torch_tensorrt.save(trt_model, path, arg_inputs=arg_inputs, kwarg_inputs=kwarg_inputs)
loaded = torch_tensorrt.load(path).module()
x, mask = torch.randn(6, 10).to(device), torch.randn(6, 5).to(device)
assert close(loaded(x, mask=mask), masked(x, mask=mask))
print("keyword inputs: loaded model runs batch 6")
print("save_load: OK")
