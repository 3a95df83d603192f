"""The CPU subset of the model zoo (benchmarks/zoo): tiny transformers configs of ten families
compiled over small ranges and checked against float32 eager at min, opt, max and two shapes
between (three calls each, fresh random inputs: ids inside the vocabulary, valid padding masks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.zoo.worker import run_model  # noqa: E402

CPU_ZOO = (
    "hf_bert",             # encoder
    "hf_deberta_v2",       # encoder, relative positions (guards on the sequence length)
    "hf_gpt2",             # decoder-only
    "hf_llama",            # decoder-only, rotary, GQA
    "hf_bart",             # encoder-decoder
    "hf_t5_encoder",       # encoder, relative position buckets
    "hf_wav2vec2",         # speech: convolutional feature extractor over raw audio
    "hf_whisper_encoder",  # speech: log-mel encoder
    "hf_clip_text",        # CLIP text tower (causal mask, argmax pooling)
    "hf_vit",              # vision transformer
)


@pytest.mark.parametrize("name", CPU_ZOO)
def test_zoo_model_matches_eager_on_cpu(name: str) -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    result = run_model(name, torch.device("cpu"), smoke=True, peers=None)
    assert result["status"] == "ok", (
        f"{name}: {result['status']} {result.get('error_class', '')}\n{result.get('error', '')}\n"
        f"{result.get('traceback', '')}\nshapes: {result.get('shapes')}"
    )
    assert len(result["shapes"]) == 5 and all(len(r["errors"]) == 3 for r in result["shapes"])
    assert result["max_error"] < 1e-3, result["shapes"]


@pytest.mark.parametrize("name", ("hf_llama", "hf_bart", "hf_t5_encoder", "hf_deberta_v2"))
def test_float32_weights_into_a_float16_engine(name: str) -> None:
    """Torch-TensorRT's usual form: the float32 model with enabled_precisions={torch.float16}. Failed
    where the model casts to its own dtype (LLaMA's RMSNorm and rotary tables, BART's positions) or
    fills masks with its dtype's minimum (DeBERTa-v2). It is also BART's way around its float16
    overflow branch (docs/third_party_models.md)."""
    pytest.importorskip("transformers")
    from benchmarks.zoo import check
    from benchmarks.zoo.models import ZOO

    torch.manual_seed(0)
    model = ZOO[name].build(True).eval()
    _, rows = check.check_float32_weights_in(torch.float16, ZOO[name], model, True, torch.device("cpu"))
    assert all(r["ok"] for r in rows), rows
    assert max(r["max_error"] for r in rows) > 0  # float16 arithmetic happened: not the float32 graph
