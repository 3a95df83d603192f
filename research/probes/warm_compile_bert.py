"""Compile a 4-layer BERT with an engine cache directory and print the import and compile seconds: run
it twice with the same directory (cold, then warm), with PYTHONPATH at two checkouts to compare them.

    python research/probes/warm_compile_bert.py CACHE_DIR
"""

import sys
import time

start = time.perf_counter()
import torch  # noqa: E402 - the import is part of what is timed
from transformers import BertConfig, BertModel  # noqa: E402

import flexrt  # noqa: E402

import_s = time.perf_counter() - start


def main(cache_dir: str) -> None:
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=4, hidden_size=256, intermediate_size=1024, num_attention_heads=4,
                        attn_implementation="sdpa")
    model = BertModel(config).eval()
    spec = flexrt.Input(min_shape=(1, 8), opt_shape=(4, 64), max_shape=(8, 128), dtype=torch.int64)
    start = time.perf_counter()
    compiled = flexrt.compile(model, ir="dynamo", kwarg_inputs={"input_ids": spec, "attention_mask": spec},
                              cache_dir=cache_dir)
    compile_s = time.perf_counter() - start
    ids, mask = torch.randint(0, 30000, (3, 50)), torch.randint(0, 2, (3, 50))
    mask[:, 0] = 1
    with torch.no_grad():
        got = compiled(input_ids=ids, attention_mask=mask).last_hidden_state
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state
    print(f"import {import_s:.2f} s, compile {compile_s:.2f} s, max abs err {(got - want).abs().max().item():.2e}")


if __name__ == "__main__":
    main(sys.argv[1])
