"""ControlNet training (seeds/000) on tiny SD components made in code: the loss goes down, a run
stopped and resumed ends with the weights of the run never stopped, the result (with its LoRA)
loads in the controlnet backend, and only safetensors are written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.test_controlnet import build_tiny_sd, lesion_map, req
from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.errors import ModelError, UsgenError
from usgen_desktop.synthesis.request import run


def triples(n: int = 4):
    """Images that follow their label maps (bright lesion on dark tissue), so a ControlNet has
    something to learn from the control image."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        lab = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(4, 18, 2)
        lab[y:y + 10, x:x + 12] = 1
        img = np.where(lab == 1, 220, 30).astype(np.uint8)
        out.append((img, LabelMap(lab), "benign" if i % 2 else "malignant"))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("cn_train_sd"))


def cfg(**kw):
    from usgen_desktop.synthesis.training.controlnet import ControlNetConfig

    base = dict(steps=4, batch=2, size=32, lr=1e-3, device="cpu", checkpoint_every=2,
                augment=False)
    base.update(kw)
    return ControlNetConfig(**base)


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_controlnet_training_lowers_the_loss(tiny, tmp_path):
    from usgen_desktop.synthesis.training.controlnet import evaluate_loss, train_controlnet

    sd, _ = tiny
    schema = load_preset("busi")
    res = train_controlnet(triples(), schema, sd, tmp_path / "cn",
                           cfg(steps=15, batch=4, lr=2e-2, checkpoint_every=0))
    assert res.step == 15 and np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    # on the same noise and timesteps: the trained ControlNet against a fresh one (which adds
    # nothing to the base UNet)
    before = evaluate_loss(triples(), schema, sd, None, 32)
    after = evaluate_loss(triples(), schema, sd, tmp_path / "cn", 32)
    assert after < 0.85 * before, (before, after)  # 1.14 -> 0.75 when written
    out = tmp_path / "cn"
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt", ".pkl")]
    assert json.loads((out / "usgen_controlnet.json").read_text())["steps_done"] == 15


def test_resume_gives_the_weights_of_the_uninterrupted_run_with_lora(tiny, tmp_path):
    from usgen_desktop.synthesis.training.controlnet import train_controlnet

    sd, _ = tiny
    schema = load_preset("busi")
    whole = train_controlnet(triples(), schema, sd, tmp_path / "whole", cfg(lora_rank=2))
    assert whole.step == 4
    cancel = CancelToken()

    def stop_at_2(p):
        if p.done >= 2:
            cancel.cancel()

    part = train_controlnet(triples(), schema, sd, tmp_path / "split", cfg(lora_rank=2),
                            progress=stop_at_2, cancel=cancel)
    assert part.cancelled and part.step == 2
    with pytest.raises(UsgenError, match="already holds a training run"):
        train_controlnet(triples(), schema, sd, tmp_path / "split", cfg(lora_rank=2))
    rest = train_controlnet(triples(), schema, sd, tmp_path / "split", cfg(lora_rank=2),
                            resume=True)
    assert rest.step == 4 and rest.losses[:2] == part.losses
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert np.allclose(rest.losses, whole.losses)
    from safetensors.torch import load_file

    la = load_file(str(tmp_path / "whole" / "pytorch_lora_weights.safetensors"))
    lb = load_file(str(tmp_path / "split" / "pytorch_lora_weights.safetensors"))
    assert la and all(np.array_equal(la[k].numpy(), lb[k].numpy()) for k in la)
    # the result is a ControlNet folder (and LoRA) the backend loads, and it changes the image
    trained = run(req(sd, tmp_path / "whole", strength=0.0,
                      params={"lora": str(tmp_path / "whole")}))[0].image
    fresh = run(req(sd, tiny[1], strength=0.0))[0].image
    assert trained.shape == lesion_map().shape and not np.array_equal(trained, fresh)


def test_starts_from_a_controlnet_folder_and_refuses_bad_inputs(tiny, tmp_path):
    from usgen_desktop.synthesis.training.controlnet import train_controlnet

    sd, cn = tiny
    res = train_controlnet(triples(2), None, sd, tmp_path / "ft", cfg(steps=1), init_from=cn)
    assert res.step == 1
    assert json.loads((tmp_path / "ft" / "usgen_controlnet.json").read_text())["init_from"] == str(cn)
    with pytest.raises(ModelError, match="config.json"):
        train_controlnet(triples(2), None, sd, tmp_path / "x", cfg(steps=1), init_from=tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        train_controlnet(triples(2), None, tmp_path / "nope", tmp_path / "x", cfg(steps=1))
    with pytest.raises(UsgenError, match="multiple of 8"):
        train_controlnet(triples(2), None, sd, tmp_path / "x", cfg(size=30))
    with pytest.raises(UsgenError, match="learning rates"):
        train_controlnet(triples(2), None, sd, tmp_path / "x", cfg(lr=float("nan")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsgenError, match="is a file"):
        train_controlnet(triples(2), None, sd, tmp_path / "file", cfg(steps=1))
