"""The zoo: 48 architectures, built from code or configs with random weights (nothing downloaded).

Vision models take a dynamic batch (1..16), and the ones that accept any image size a dynamic
height and width too; text models a batch of 1..8 and a sequence of 8..256; wav2vec2 4000..32000
audio samples. Each transformers entry has a tiny smoke config (the CPU test and `--smoke`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.zoo.spec import Arg, Dim, ZooModel, need

B16 = Dim("batch", 1, 8, 16)
B8 = Dim("batch", 1, 4, 8)
SEQ = Dim("seq", 8, 128, 256)
TGT = Dim("tgt", 8, 64, 128)
SMOKE_B = Dim("batch", 1, 2, 3)
SMOKE_SEQ = Dim("seq", 4, 8, 16)
SMOKE_TGT = Dim("tgt", 3, 5, 8)


def _tv(name: str, **kw: Any) -> Callable[[bool], torch.nn.Module]:
    def build(smoke: bool) -> torch.nn.Module:
        tv = need("torchvision")
        return getattr(tv.models, name)(weights=None, **kw)
    return build


def _tv_seg(name: str) -> Callable[[bool], torch.nn.Module]:
    def build(smoke: bool) -> torch.nn.Module:
        need("torchvision")
        import torchvision.models.segmentation as seg
        return getattr(seg, name)(weights=None, weights_backbone=None, aux_loss=False)
    return build


def _tv_det(name: str) -> Callable[[bool], torch.nn.Module]:
    def build(smoke: bool) -> torch.nn.Module:
        need("torchvision")
        import torchvision.models.detection as det
        return getattr(det, name)(weights=None, weights_backbone=None)
    return build


def _timm(name: str) -> Callable[[bool], torch.nn.Module]:
    def build(smoke: bool) -> torch.nn.Module:
        return need("timm").create_model(name, pretrained=False)
    return build


def _hf(model_cls: str, config_cls: str, full: dict[str, Any], tiny: dict[str, Any],
        attn: str | None = "sdpa") -> Callable[[bool], torch.nn.Module]:
    """A transformers model from its config: `full` for the GPU run, `tiny` (1-2 layers) for smoke."""
    def build(smoke: bool) -> torch.nn.Module:
        tf = need("transformers")
        cfg = getattr(tf, config_cls)(**(tiny if smoke else full))
        kw = {"attn_implementation": attn} if attn else {}
        return getattr(tf, model_cls)._from_config(cfg, **kw)
    return build


def _tiny(**kw: Any) -> dict[str, Any]:
    base = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=128,
                max_position_embeddings=64)
    base.update(kw)
    return base


class WhisperEncoderOnly(torch.nn.Module):
    """Whisper's encoder, as users run it for audio embeddings (the full model needs decoder ids)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_features: torch.Tensor) -> Any:
        return self.encoder(input_features=input_features)


def _whisper(smoke: bool) -> torch.nn.Module:
    tf = need("transformers")
    kw = (dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
               encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=25, vocab_size=128,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
          if smoke else dict(d_model=512, encoder_layers=6, decoder_layers=1, encoder_attention_heads=8,
                             decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                             num_mel_bins=80))  # the decoder is built too: WhisperConfig's 6 heads do not divide 512
    cfg = tf.WhisperConfig(**kw)
    return WhisperEncoderOnly(tf.WhisperModel._from_config(cfg, attn_implementation="sdpa"))


def _ids(vocab: int) -> tuple[Arg, ...]:
    return (Arg("input_ids", ("batch", "seq"), "ids", vocab), Arg("attention_mask", ("batch", "seq"), "mask"))


def _encdec(vocab: int) -> tuple[Arg, ...]:
    return (*_ids(vocab), Arg("decoder_input_ids", ("batch", "tgt"), "ids", vocab))


def _image(size: int = 224, channels: int = 3, name: str = "x", positional: bool = True) -> tuple[Arg, ...]:
    return (Arg(name, ("batch", channels, size, size), positional=positional),)


def _image_hw(name: str = "x", positional: bool = True) -> tuple[Arg, ...]:
    return (Arg(name, ("batch", 3, "height", "width"), positional=positional),)


H = Dim("height", 128, 224, 384, 32)
W = Dim("width", 128, 224, 384, 32)
B4 = Dim("batch", 1, 2, 4)
IMG = Dim("image", 224, 224, 224)  # static: a name so the smoke config can use its own size
SMOKE_IMG = Dim("image", 32, 32, 32)
VOCAB = 30000  # ids are drawn below every full config's vocabulary (smoke configs: below 128, see spec)

LLM = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
           num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, use_cache=False)
BERT_BASE: dict[str, Any] = {}


def _entries() -> list[ZooModel]:
    z: list[ZooModel] = []
    # --- torchvision CNNs (batch 1..16 at 224), some with dynamic HxW
    for name in ("resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf",
                 "densenet121", "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0"):
        z.append(ZooModel(f"tv_{name}", "cnn", "torchvision", _tv(name), (B16,), _image()))
    z.append(ZooModel("tv_resnet50_hw", "cnn-hw", "torchvision", _tv("resnet50"), (B16, H, W), _image_hw()))
    z.append(ZooModel("tv_vit_b_16", "vit", "torchvision", _tv("vit_b_16"), (B16,), _image()))
    z.append(ZooModel("tv_swin_t", "vit", "torchvision", _tv("swin_t"), (B16,), _image()))
    z.append(ZooModel("tv_swin_t_hw", "vit-hw", "torchvision", _tv("swin_t"), (B4, H, W), _image_hw()))
    z.append(ZooModel("tv_deeplabv3_mobilenet", "segmentation", "torchvision", _tv_seg("deeplabv3_mobilenet_v3_large"),
                      (B4, H, W), _image_hw()))
    z.append(ZooModel("tv_fcn_resnet50", "segmentation", "torchvision", _tv_seg("fcn_resnet50"), (B4, H, W), _image_hw()))
    z.append(ZooModel("tv_fasterrcnn_mobilenet", "detection", "torchvision", _tv_det("fasterrcnn_mobilenet_v3_large_fpn"),
                      (Dim("height", 320, 480, 640, 32), Dim("width", 320, 480, 640, 32)),
                      (Arg("images", (3, "height", "width"), positional=True, in_list=True),)))
    # --- timm
    for name, fam in (("vit_small_patch16_224", "vit"), ("deit_tiny_patch16_224", "vit"), ("convnext_atto", "cnn"),
                      ("efficientnet_b0", "cnn"), ("mobilenetv3_large_100", "cnn"), ("resnet26d", "cnn"),
                      ("regnety_008", "cnn"), ("swin_tiny_patch4_window7_224", "vit"), ("mixer_b16_224", "vit"),
                      ("poolformer_s12", "cnn"), ("ghostnet_100", "cnn"), ("beit_base_patch16_224", "vit")):
        z.append(ZooModel(f"timm_{name}", fam, "timm", _timm(name), (B16,), _image()))
    z.append(ZooModel("timm_resnet50_hw", "cnn-hw", "timm", _timm("resnet50"), (B16, H, W), _image_hw()))
    # --- transformers: encoders
    text = (B8, SEQ)
    smoke_text = (SMOKE_B, SMOKE_SEQ)
    for name, model, cfg, full, tiny in (
        ("bert", "BertModel", "BertConfig", BERT_BASE, _tiny()),
        ("roberta", "RobertaModel", "RobertaConfig", {}, _tiny(max_position_embeddings=80)),
        ("distilbert", "DistilBertModel", "DistilBertConfig", {},
         dict(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=128, max_position_embeddings=64)),
        ("albert", "AlbertModel", "AlbertConfig", {}, _tiny(embedding_size=16)),
        ("electra", "ElectraModel", "ElectraConfig", {}, _tiny(embedding_size=32)),
        ("deberta_v2", "DebertaV2Model", "DebertaV2Config", dict(hidden_size=768, num_hidden_layers=12), _tiny()),
    ):
        z.append(ZooModel(f"hf_{name}", "encoder", "transformers", _hf(model, cfg, full, tiny,
                          None if name == "deberta_v2" else "sdpa"), text, _ids(VOCAB), smoke_text))
    # --- decoder-only (no KV cache: one forward over the prompt)
    for name, model, cfg, full, tiny in (
        ("llama", "LlamaModel", "LlamaConfig", LLM, _tiny(num_key_value_heads=1, use_cache=False)),
        ("qwen2", "Qwen2Model", "Qwen2Config", LLM, _tiny(num_key_value_heads=1, use_cache=False)),
        ("mistral", "MistralModel", "MistralConfig", {**LLM, "sliding_window": 128},
         _tiny(num_key_value_heads=1, use_cache=False, sliding_window=8)),
        ("gpt2", "GPT2Model", "GPT2Config", dict(n_layer=12, use_cache=False),
         dict(n_embd=32, n_layer=1, n_head=2, vocab_size=128, n_positions=64, use_cache=False)),
        ("opt", "OPTModel", "OPTConfig", dict(hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                                            use_cache=False),
         dict(hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2, vocab_size=128,
              max_position_embeddings=64, word_embed_proj_dim=32, use_cache=False)),
        ("phi", "PhiModel", "PhiConfig", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
                                            num_attention_heads=16, vocab_size=32000, use_cache=False),
         _tiny(use_cache=False)),
    ):
        z.append(ZooModel(f"hf_{name}", "decoder", "transformers", _hf(model, cfg, full, tiny), text, _ids(VOCAB),
                          smoke_text))
    # --- encoder-decoder (one forward with decoder ids, no cache)
    for name, model, cfg, full, tiny in (
        ("bart", "BartModel", "BartConfig", dict(use_cache=False),
         dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=128, max_position_embeddings=64, use_cache=False)),
        ("t5", "T5Model", "T5Config", dict(use_cache=False),
         dict(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2, vocab_size=128, use_cache=False)),
        ("mbart", "MBartModel", "MBartConfig", dict(use_cache=False, d_model=512, encoder_layers=6, decoder_layers=6,
                                                  encoder_attention_heads=8, decoder_attention_heads=8,
                                                  encoder_ffn_dim=2048, decoder_ffn_dim=2048),
         dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=128, max_position_embeddings=64, use_cache=False)),
    ):
        z.append(ZooModel(f"hf_{name}", "encoder-decoder", "transformers", _hf(model, cfg, full, tiny),
                          (B8, SEQ, TGT), _encdec(VOCAB), (SMOKE_B, SMOKE_SEQ, SMOKE_TGT)))
    z.append(ZooModel("hf_t5_encoder", "encoder", "transformers",
                      _hf("T5EncoderModel", "T5Config", {}, dict(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                                                                 vocab_size=128)),
                      text, _ids(VOCAB), smoke_text))
    # --- speech
    z.append(ZooModel("hf_wav2vec2", "speech", "transformers",
                      _hf("Wav2Vec2Model", "Wav2Vec2Config", {},
                          dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                               num_conv_pos_embedding_groups=2)),
                      (B8, Dim("samples", 4000, 16000, 32000)), (Arg("input_values", ("batch", "samples")),),
                      (SMOKE_B, Dim("samples", 400, 800, 1600))))
    z.append(ZooModel("hf_whisper_encoder", "speech", "transformers", _whisper,
                      (B8, Dim("mels", 80, 80, 80), Dim("frames", 3000, 3000, 3000)),
                      (Arg("input_features", ("batch", "mels", "frames")),),
                      (SMOKE_B, Dim("mels", 16, 16, 16), Dim("frames", 50, 50, 50))))
    # --- CLIP and HF vision
    z.append(ZooModel("hf_clip_text", "clip", "transformers",
                      _hf("CLIPTextModel", "CLIPTextConfig", {}, _tiny(max_position_embeddings=77)),
                      (B8, Dim("seq", 8, 32, 77)), _ids(VOCAB), (SMOKE_B, SMOKE_SEQ)))
    z.append(ZooModel("hf_clip_vision", "clip", "transformers",
                      _hf("CLIPVisionModel", "CLIPVisionConfig", {},
                          dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               image_size=32, patch_size=8)),
                      (B16, IMG), (Arg("pixel_values", ("batch", 3, "image", "image")),), (SMOKE_B, SMOKE_IMG)))
    z.append(ZooModel("hf_vit", "vit", "transformers",
                      _hf("ViTModel", "ViTConfig", {}, dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=64, image_size=32, patch_size=8)),
                      (B16, IMG), (Arg("pixel_values", ("batch", 3, "image", "image")),), (SMOKE_B, SMOKE_IMG)))
    z.append(ZooModel("hf_segformer", "segmentation", "transformers",
                      _hf("SegformerForSemanticSegmentation", "SegformerConfig", {}, {}, attn=None),
                      (B4, H, W), (Arg("pixel_values", ("batch", 3, "height", "width")),)))
    return z


ZOO: dict[str, ZooModel] = {m.name: m for m in _entries()}
