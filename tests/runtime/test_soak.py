"""Loading, calling and dropping a model many times keeps memory, descriptors and mappings flat
(issue #20, 1): every load of one engine shares the process's one loaded copy of it."""

from __future__ import annotations

import gc
import os
import warnings

import torch

import flexrt


def _rss_kb() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _engine_maps() -> int:
    return sum(1 for line in open("/proc/self/maps") if "flexrt-engine" in line)


def test_load_call_drop_500_times_keeps_rss_fds_and_mappings_flat(zoo, tmp_path):
    path = str(tmp_path / "soak.ep")
    flexrt.save(zoo("expand_reshape").module, path)
    x = torch.randn(3, 20, 96)

    def once() -> None:
        module = flexrt.load(path).module()
        with torch.no_grad():
            module(x)

    warnings.simplefilter("ignore")  # pytest keeps every warning raised in a test: that is not flexrt's memory
    for _ in range(20):  # warm up: allocator pools, first-load imports
        once()
    gc.collect()
    before = (_rss_kb(), _fds(), _engine_maps())
    for _ in range(500):
        once()
    gc.collect()
    after = (_rss_kb(), _fds(), _engine_maps())
    print(f"soak: rss {before[0]} -> {after[0]} kB, fds {before[1]} -> {after[1]}, engine mappings {before[2]} -> {after[2]}")
    assert after[1] <= before[1]
    assert after[2] <= before[2]
    assert after[0] - before[0] < 16 * 1024  # a leaked engine copy per load would be 500 copies
