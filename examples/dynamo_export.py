"""Seed 003 "Compiling Exported Programs": dynamo.compile of an ExportedProgram, and dynamo.trace."""

import torch

import flexrt as torch_tensorrt

device = "cuda" if torch.cuda.is_available() else "cpu"
# float32 engines on CUDA use TF32 for matrix products and convolutions, as TensorRT's do by default
# (compile with disable_tf32=True for strict float32): compare with eager to a relative tolerance
TOL = 2e-3 if device == "cuda" else 1e-4


def close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return out.shape == ref.shape and float((out - ref).norm()) <= TOL * float(ref.norm())


class MyModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


torch.manual_seed(0)
model = MyModel().eval().to(device)
inputs = [torch.randn((1, 3, 224, 224), dtype=torch.float32).to(device)]
exp_program = torch.export.export(model, tuple(inputs))
trt_gm = torch_tensorrt.dynamo.compile(exp_program, inputs)  # Output is a torch.nn.Module
out = trt_gm(*inputs)
assert close(out, model(*inputs))
print("static ExportedProgram: matches eager", tuple(out.shape))

# Tracing: Input ranges -> torch.export.Dim -> ExportedProgram, then compile it
inputs = [torch_tensorrt.Input(min_shape=(1, 3, 224, 224), opt_shape=(4, 3, 224, 224), max_shape=(8, 3, 224, 224), dtype=torch.float32)]
exp_program = torch_tensorrt.dynamo.trace(model, inputs)
print("traced ranges:", {str(k): str(v) for k, v in exp_program.range_constraints.items()})
trt_gm = torch_tensorrt.dynamo.compile(exp_program, inputs)
for batch in (1, 3, 8):
    x = torch.randn(batch, 3, 224, 224, device=device)
    assert close(trt_gm(x), model(x))
    print(f"traced program, batch {batch}: matches eager")
print("dynamo_export: OK")
