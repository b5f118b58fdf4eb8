"""LoRA (+ textual-inversion token) training on tiny SD/ControlNet components: a few steps on
the CPU, the result loads in the controlnet backend and changes its output."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_controlnet import build_tiny_sd, lesion_map, req
from usgen_desktop.core.labels import load_preset
from usgen_desktop.errors import ModelError, UsgenError
from usgen_desktop.synthesis.request import run


def triples():
    rng = np.random.default_rng(0)
    out = []
    for k in ("benign", "malignant"):
        img = rng.integers(0, 255, (30, 40), dtype=np.uint8)
        out.append((img, lesion_map(), k))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("lora_sd"))


def test_lora_and_token_train_and_load(tiny, tmp_path):
    from usgen_desktop.synthesis.training.lora import LoraConfig, train_lora

    sd, cn = tiny
    seen = []
    res = train_lora(triples(), load_preset("busi"), sd, tmp_path / "lora",
                     LoraConfig(steps=3, size=32, rank=2, lr=1e-2, token="<us>", device="cpu"),
                     controlnet_dir=cn, progress=lambda p: seen.append(p.preview["loss"]))
    assert res.step == 3 and len(seen) == 3 and all(np.isfinite(seen))
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "lora" / "learned_embeds.safetensors").is_file()
    plain = run(req(sd, cn, strength=0.0))[0].image
    tuned = run(req(sd, cn, strength=0.0, params={
        "lora": str(tmp_path / "lora"), "ti_token": "<us>",
        "ti_embedding": str(tmp_path / "lora" / "learned_embeds.safetensors")}))[0].image
    assert tuned.shape == plain.shape == (30, 40)
    assert not np.array_equal(plain, tuned)  # the LoRA and the token changed the model


def test_lora_bad_inputs(tiny, tmp_path):
    from usgen_desktop.synthesis.training.lora import LoraConfig, train_lora

    sd, cn = tiny
    with pytest.raises(ModelError):
        train_lora(triples(), None, tmp_path / "none", tmp_path / "o", LoraConfig(size=32))
    with pytest.raises(UsgenError, match="multiple of 8"):
        train_lora(triples(), None, sd, tmp_path / "o", LoraConfig(size=30), controlnet_dir=cn)
