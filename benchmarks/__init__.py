"""Benchmarks of flexrt against its peers (eager, CUDA graphs, torch.compile, AOTInductor).

Entry point: `python -m benchmarks.bench --model NAME`; see `benchmarks/bench.py`.
"""
