"""Seed 001 "Custom Dynamic Shape Constraints": a matmul whose query and key share Dim seq_len."""

import torch

import flexrt as torch_tensorrt

device = "cuda" if torch.cuda.is_available() else "cpu"
# float32 engines on CUDA use TF32 for matrix products and convolutions, as TensorRT's do by default
# (compile with disable_tf32=True for strict float32): compare with eager to a relative tolerance
TOL = 2e-3 if device == "cuda" else 1e-4


def close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return out.shape == ref.shape and float((out - ref).norm()) <= TOL * float(ref.norm())


class MatMul(torch.nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, query, key):
        attn_weight = torch.matmul(query, key.transpose(-1, -2))
        return attn_weight


model = MatMul().eval().to(device)
inputs = [torch.randn(1, 12, 7, 64).to(device), torch.randn(1, 12, 7, 64).to(device)]
seq_len = torch.export.Dim("seq_len", min=1, max=10)
dynamic_shapes = ({2: seq_len}, {2: seq_len})
# Export the model first with custom dynamic shape constraints
exp_program = torch.export.export(model, tuple(inputs), dynamic_shapes=dynamic_shapes)
trt_gm = torch_tensorrt.dynamo.compile(exp_program, inputs)
# Run inference
out = trt_gm(*inputs)
assert close(out, model(*inputs))
for n in (1, 3, 10):
    q, k = torch.randn(1, 12, n, 64, device=device), torch.randn(1, 12, n, 64, device=device)
    assert close(trt_gm(q, k), model(q, k))
    print(f"seq_len {n}: output {tuple(trt_gm(q, k).shape)} matches eager")
print("custom_constraints: OK")
