"""The controlnet backend on tiny Stable Diffusion + ControlNet components built from configs
(diffusers test style; no download): an image comes back, seeds repeat, cancel stops, and broken
folders are one-sentence ModelErrors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.errors import ModelError
from usgen_desktop.synthesis.request import GenerationRequest, run

WORDS = ["ultrasound", "image", "of", "breast", "with", "a", "benign", "malignant", "lesion",
         "normal", "tissue"]


def tiny_tokenizer(folder: Path):
    """A CLIP tokenizer whose vocabulary is single letters plus a few whole words."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("<>,.0123456789")
    vocab_list = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{c}</w>" for c in letters]
    merges = ["#version: 0.2"]
    # merges that build each whole word, so prompts become a few tokens
    for word in WORDS:
        cur = word[0]
        for k, ch in enumerate(word[1:], 1):
            nxt = ch + ("</w>" if k == len(word) - 1 else "")
            merges.append(f"{cur} {nxt}")
            cur = cur + nxt
            if cur not in vocab_list:
                vocab_list.append(cur)
    merges = list(dict.fromkeys(merges))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=16)


def build_tiny_sd(root: Path) -> tuple[Path, Path]:
    """Save a tiny SD 1.5-shaped pipeline and a ControlNet made from its UNet."""
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok = tiny_tokenizer(root / "tok")
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        norm_num_groups=4, attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=32,
    )
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=24,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tok), max_position_embeddings=16,
        projection_dim=16,
    ))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    sd_dir, cn_dir = root / "sd", root / "cn"
    pipe.save_pretrained(sd_dir, safe_serialization=True)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    cn.save_pretrained(cn_dir, safe_serialization=True)
    return sd_dir, cn_dir


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def lesion_map() -> LabelMap:
    data = np.zeros((30, 40), np.uint8)
    data[8:20, 10:26] = 1
    return LabelMap(data)


def req(sd: Path, cn: Path | None, **kw) -> GenerationRequest:
    params = {"resolution": 32}
    if cn is not None:
        params["controlnet_dir"] = str(cn)
    params.update(kw.pop("params", {}))
    base = dict(label_maps=[lesion_map()], schema=load_preset("busi"), backend="controlnet",
                model_dir=str(sd), classes=["malignant"], steps=2, device="cpu", params=params)
    base.update(kw)
    return GenerationRequest(**base)


def test_tiny_pipeline_returns_an_image_of_the_label_map_size(tiny_sd):
    sd, cn = tiny_sd
    seen = []
    res = run(req(sd, cn, steps=3, strength=0.5), progress=lambda p: seen.append(p.done))
    img = res[0].image
    assert img.shape == (30, 40) and img.dtype == np.uint8
    assert len(res[0].provenance["model_hash"]) == 16
    # 3 ControlNet steps + int(3 * 0.5) = 1 img2img step, reported in one running count
    assert max(seen) == 4
    again = run(req(sd, cn, steps=3, strength=0.5))[0].image
    assert np.array_equal(img, again)  # CPU generator: same seed, same image
    other = run(req(sd, cn, steps=3, strength=0.5, seed=5))[0].image
    assert not np.array_equal(img, other)


def test_no_refinement_and_guidance(tiny_sd):
    sd, cn = tiny_sd
    res = run(req(sd, cn, strength=0.0, guidance=3.0, prompt="ultrasound image"))
    assert res[0].image.shape == (30, 40)
    # low-memory mode (attention slicing, VAE tiling; CPU offload only on CUDA) gives the same
    low = run(req(sd, cn, strength=0.0, guidance=3.0, prompt="ultrasound image",
                  params={"low_memory": True}))
    assert np.abs(low[0].image.astype(int) - res[0].image.astype(int)).max() <= 1


def test_cancel_stops_within_a_step(tiny_sd):
    sd, cn = tiny_sd
    cancel = CancelToken()
    seen = []

    def progress(p):
        seen.append(p.done)
        cancel.cancel()

    assert run(req(sd, cn, steps=6, count=2), progress=progress, cancel=cancel) == []
    assert max(seen) == 1


def test_broken_folders_are_model_errors(tiny_sd, tmp_path):
    import shutil

    sd, cn = tiny_sd
    with pytest.raises(ModelError, match="does not exist"):
        run(req(tmp_path / "nothing", cn))
    with pytest.raises(ModelError, match="config.json"):
        run(req(sd, tmp_path))
    partial = tmp_path / "partial"
    shutil.copytree(sd, partial)
    shutil.rmtree(partial / "vae")
    with pytest.raises(ModelError, match="vae"):
        run(req(partial, cn))
    damaged = tmp_path / "damaged"
    shutil.copytree(sd, damaged)
    w = next((damaged / "unet").glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ModelError, match="cannot be loaded"):
        run(req(damaged, cn))
    with pytest.raises(ModelError, match="LoRA"):
        run(req(sd, cn, params={"lora": str(tmp_path / "missing.safetensors")}))


def test_control_image_colours_labels():
    from usgen_desktop.synthesis.backends.controlnet import class_prompt, colourise

    schema = load_preset("busi")
    rgb = colourise(lesion_map().data, schema)
    assert rgb.shape == (30, 40, 3)
    assert tuple(rgb[10, 12]) == tuple(schema.by_id(1).color) and tuple(rgb[0, 0]) == (0, 0, 0)
    assert class_prompt("benign", "<us>").startswith("<us> ultrasound image of breast")
    assert class_prompt("benign", None, "my prompt") == "my prompt"
