"""`flexrt serve` options and `serve run` args become one ServeConfig; mistakes fail before Ray starts."""

from __future__ import annotations

import argparse

import pytest

from flexrt.errors import ServingError
from flexrt.serving import cli
from flexrt.serving.config import ServeConfig


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flexrt")
    sub = p.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    return p.parse_args(argv)


def test_cli_options_become_a_config() -> None:
    args = parse(["serve", "/m/bert.ep", "--batch-dim", "ids:0", "--batch-dim", "mask:0", "--max-batch-size", "16",
                  "--replicas", "auto", "--max-replicas", "3", "--device", "cuda", "--max-queue", "32",
                  "--replicas-per-gpu", "4", "--no-access-log", "--warm-up-sizes", "ids:1=32,64",
                  "--warm-up-sizes", "mask:1=128"])
    assert args.fn is cli.run
    cfg = cli.config_from_args(args)
    assert cfg.name == "bert" and cfg.batch_dims == (("ids", 0), ("mask", 0)) and cfg.max_batch_size == 16
    assert cfg.replicas == "auto" and cfg.max_replicas == 3 and cfg.device == "cuda" and cfg.max_queue == 32
    assert cfg.ongoing == 32 and cfg.replicas_per_gpu == 4 and cfg.access_log is False  # 2 x batch
    assert cfg.warm_up_sizes == (("ids", 1, (32, 64)), ("mask", 1, (128,)))
    assert ServeConfig.from_mapping(cfg.to_mapping()) == cfg  # what replicas receive round-trips


def test_serve_run_string_args() -> None:
    cfg = ServeConfig.from_mapping({"artifact": "a.ep", "batch_dim": "x:0,y:1", "max_batch_size": "4", "pad": "true",
                                    "replicas": "2"})
    assert cfg.batch_dims == (("x", 0), ("y", 1)) and cfg.max_batch_size == 4 and cfg.pad == "opt" and cfg.replicas == 2
    assert cfg.access_log is True and ServeConfig.from_mapping({"artifact": "a.ep", "access_log": "false"}).access_log is False
    sized = ServeConfig.from_mapping({"artifact": "a.ep", "warm_up_sizes": "ids:1=32,64; mask:1=8"})
    assert sized.warm_up_sizes == (("ids", 1, (32, 64)), ("mask", 1, (8,)))
    assert ServeConfig.from_mapping({"artifact": "a.ep"}).padding == "none"  # auto: CPU runs no CUDA graphs
    assert ServeConfig.from_mapping({"artifact": "a.ep", "device": "cuda"}).padding == "buckets"
    assert ServeConfig.from_mapping({"artifact": "a.ep", "device": "cuda", "pad": False}).padding == "none"


@pytest.mark.parametrize("args, text", [
    ({"artifact": ""}, "no artifact"),
    ({"artifact": "a.ep", "max_batch_size": "0"}, "max_batch_size must be >= 1"),
    ({"artifact": "a.ep", "device": "tpu"}, "cpu or cuda"),
    ({"artifact": "a.ep", "batch_dim": "x"}, "NAME:DIM"),
    ({"artifact": "a.ep", "max_bach_size": 4}, "unknown serve option(s) ['max_bach_size']"),
    ({"artifact": "a.ep", "backend": "eager"}, "reference_model=MODULE:CALLABLE"),
    ({"artifact": "a.ep", "device": "cuda", "replicas_per_gpu": 0}, "replicas_per_gpu must be >= 1"),
    ({"artifact": "a.ep", "replicas_per_gpu": 2}, "needs --device cuda"),
    ({"artifact": "a.ep", "access_log": "maybe"}, "access_log must be true or false"),
    ({"artifact": "a.ep", "warm_up_sizes": "ids:1"}, "expected NAME:DIM=SIZE"),
])
def test_bad_options(args: dict, text: str) -> None:
    with pytest.raises(ServingError) as info:
        ServeConfig.from_mapping(args)
    assert text in str(info.value)


def test_run_refuses_a_missing_artifact_before_starting_ray(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse(["serve", "/nonexistent/model.ep"])) == 2
    assert "no such artifact" in capsys.readouterr().err
