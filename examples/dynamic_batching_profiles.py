"""Seed 004 (Polygraphy "Using Dynamic Shapes With TensorRT"): one model served in three regimes.

Three optimization profiles in one engine — low latency at batch 1, dynamic batching over 1..32
(mostly 4), offline batches of 128 — and a runner (execution context) per profile, so that
switching between them costs nothing. Runs on CUDA or CPU.
"""

import os
import tempfile

import torch

import flexrt

device = "cuda" if torch.cuda.is_available() else "cpu"
# float32 engines on CUDA use TF32 for matrix products and convolutions, as TensorRT's do by default
# (compile with disable_tf32=True for strict float32): compare with eager to a relative tolerance
TOL = 2e-3 if device == "cuda" else 1e-4


def close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return out.shape == ref.shape and float((out - ref).norm()) <= TOL * float(ref.norm())


class Classifier(torch.nn.Module):
    """An image classifier for 3x28x28 images."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


torch.manual_seed(0)
model = Classifier().eval().to(device)

profiles = [
    # 1. low latency: batch 1
    flexrt.Profile().add("x", min=(1, 3, 28, 28), opt=(1, 3, 28, 28), max=(1, 3, 28, 28)),
    # 2. dynamic batching: 1..32, most often 4
    flexrt.Profile().add("x", min=(1, 3, 28, 28), opt=(4, 3, 28, 28), max=(32, 3, 28, 28)),
    # 3. offline: batch 128
    flexrt.Profile().add("x", min=(128, 3, 28, 28), opt=(128, 3, 28, 28), max=(128, 3, 28, 28)),
]
for p in profiles:
    print(repr(p))
engine = flexrt.build_engine(model, profiles=profiles)
path = os.path.join(tempfile.mkdtemp(prefix="flexrt-example-"), "dynamic_identity.engine")
engine.save(path)  # inspect it with: flexrt inspect <path>
print(f"saved {path}")

# A runner per profile: activating one only makes its execution context.
low_latency = flexrt.Runner(engine, profile=0)
dynamic_batching = flexrt.Runner(engine, profile=1)
offline = flexrt.Runner(engine, profile=2)

with low_latency, dynamic_batching, offline:
    for runner, batch in ((low_latency, 1), (dynamic_batching, 4), (dynamic_batching, 19), (offline, 128), (low_latency, 1)):
        x = torch.randn(batch, 3, 28, 28, device=device)
        outputs = runner.infer(feed_dict={"x": x})
        with torch.no_grad():
            expected = model(x)
        assert close(outputs["output"], expected)
        ctx = runner.context
        print(f"{runner.name}: batch {batch:3d} -> output {tuple(outputs['output'].shape)} "
              f"(profile {ctx.active_optimization_profile}), matches eager")

print("dynamic_batching_profiles: OK")
