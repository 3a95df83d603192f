"""Serving benchmark: open-loop Poisson load against flexrt serve and its peers on Ray Serve.

Entry point: `python -m benchmarks.serve --model bert` (see README.md); `--smoke` runs on a CPU in < 60 s.
"""
