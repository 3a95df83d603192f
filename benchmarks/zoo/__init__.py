"""The model zoo benchmark: third-party architectures (torchvision, timm, transformers) compiled
over realistic ranges, checked against eager and timed against torch.compile (issue #18).

`python -m benchmarks.zoo --shard K/N --out DIR` runs one shard, each model in its own subprocess;
`python -m benchmarks.zoo merge DIR...` writes benchmarks/results/zoo/zoo.{json,md,png}.
"""
