"""train_sdm on a tiny overfit set: the loss falls, progress carries it, a cancelled run
resumes to the same weights as a run never interrupted, and the result loads in the backend."""

from __future__ import annotations

import numpy as np
import pytest

from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.errors import DatasetError, UsgenError

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
            attention_head_dim=4)


def triples(n: int = 4):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        lab = np.zeros((36, 40), np.uint8)
        lab[8 + i : 24 + i, 10:28] = 1
        img = np.where(lab > 0, 40, 200).astype(np.uint8)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        out.append((img, LabelMap(lab), ["benign", "malignant"][i % 2]))
    return out


def config(**kw):
    from usgen_desktop.synthesis.training.sdm import TrainConfig

    base = dict(size=32, steps=6, batch=2, lr=1e-3, warmup=1, checkpoint_every=0,
                sample_every=0, device="cpu", **TINY)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (a second one mostly waits, worse on a busy CPU)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_loss_falls_on_a_tiny_overfit_set(tmp_path, one_thread):
    from usgen_desktop.synthesis.training.sdm import train_sdm

    seen = []
    res = train_sdm(triples(), tmp_path / "run", config(steps=60, batch=4, lr=3e-3,
                                                        augment=False),
                    progress=lambda p: seen.append(p.preview), schema=load_preset("busi"))
    assert res.step == 60 and len(res.losses) == 60
    # means over 15 steps: single diffusion losses jump with the random timestep
    first, last = np.mean(res.losses[:15]), np.mean(res.losses[-15:])
    assert last < 0.7 * first, (first, last)
    losses = [p["loss"] for p in seen if isinstance(p, dict) and p.get("loss") is not None]
    assert len(losses) == 60 and losses == pytest.approx(res.losses)


def test_cancelled_run_resumes_to_the_uninterrupted_weights(tmp_path):
    from safetensors.torch import load_file

    from usgen_desktop.synthesis.training.sdm import (
        latest_checkpoint,
        load_training_state,
        train_sdm,
    )

    cfg = config(checkpoint_every=2, sample_every=3, sample_steps=2)
    full = train_sdm(triples(), tmp_path / "full", cfg, schema=load_preset("busi"))
    assert full.step == 6 and (tmp_path / "full" / "samples").is_dir()

    cancel = CancelToken()

    def stop_at_3(p):
        if p.done == 3:
            cancel.cancel()

    part = train_sdm(triples(), tmp_path / "part", cfg, progress=stop_at_3, cancel=cancel,
                     schema=load_preset("busi"))
    assert part.cancelled and part.step == 3
    assert load_training_state(latest_checkpoint(tmp_path / "part"))["step"] == 3
    with pytest.raises(UsgenError, match="already holds a training run"):
        train_sdm(triples(), tmp_path / "part", cfg, schema=load_preset("busi"))
    resumed = train_sdm(triples(), tmp_path / "part", cfg, schema=load_preset("busi"),
                        resume=True)
    assert resumed.step == 6 and not resumed.cancelled
    assert resumed.losses == pytest.approx(full.losses, rel=1e-4, abs=1e-6)
    a = load_file(str(tmp_path / "full" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "part" / "unet" / "diffusion_pytorch_model.safetensors"))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5


def test_trained_folder_loads_in_the_backend_and_exports(tmp_path):
    from usgen_desktop.synthesis.request import GenerationRequest, run
    from usgen_desktop.synthesis.training.sdm import (
        export_checkpoint,
        latest_checkpoint,
        train_sdm,
    )

    out = tmp_path / "run"
    train_sdm(triples(), out, config(steps=2, checkpoint_every=1), schema=load_preset("busi"))
    dest = export_checkpoint(latest_checkpoint(out), tmp_path / "exported")
    for folder in (out, dest):
        lm = LabelMap(triples(1)[0][1].data)
        r = run(GenerationRequest([lm], load_preset("busi"), backend="sdm",
                                  model_dir=str(folder), classes=["malignant"], steps=2,
                                  device="cpu"))
        assert r[0].image.shape == lm.shape
    assert not (dest / "ema").exists()  # the export ships the EMA weights as unet/ only


def test_bad_inputs_are_user_errors(tmp_path):
    from usgen_desktop.synthesis.training.sdm import train_sdm

    with pytest.raises(DatasetError):
        train_sdm([], tmp_path / "a", config())
    img, lab, c = triples(1)[0]
    with pytest.raises(DatasetError, match="label map"):
        train_sdm([(img[:-2], lab, c)], tmp_path / "b", config())
    with pytest.raises(UsgenError, match="at least one step"):
        train_sdm(triples(), tmp_path / "c", config(steps=0))


def test_training_can_start_from_an_exported_model(tmp_path, one_thread):
    from safetensors.torch import load_file

    from usgen_desktop.synthesis.backends.sdm import read_config
    from usgen_desktop.synthesis.training.sdm import export_checkpoint, latest_checkpoint, train_sdm

    train_sdm(triples(), tmp_path / "base", config(steps=3, checkpoint_every=1),
              schema=load_preset("busi"))
    base = export_checkpoint(latest_checkpoint(tmp_path / "base"), tmp_path / "base_model")
    start = load_file(str(base / "unet" / "diffusion_pytorch_model.safetensors"))
    # a learning rate this small leaves the weights where they started: equal to the exported
    # model's when the run starts from it, and far from them (a fresh init) when it does not
    for init, expect_equal in ((base, True), (None, False)):
        out = tmp_path / f"ft_{expect_equal}"
        train_sdm(triples(), out, config(steps=1, lr=1e-12), schema=load_preset("busi"),
                  init_from=init)
        w = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
        worst = max(float((w[k] - start[k]).abs().max()) for k in start)
        assert (worst < 1e-6) == expect_equal, worst
    # the run takes the model's size and shape, whatever the recipe said
    adopted = train_sdm(triples(), tmp_path / "adopt", config(steps=1, size=16, block_out_channels=(4, 8)),
                        schema=load_preset("busi"), init_from=base)
    assert read_config(adopted.model_dir).size == (32, 32)
    assert read_config(adopted.model_dir).training["init_from"] == "base_model"
    with pytest.raises(UsgenError, match="label ids"):
        train_sdm(triples(), tmp_path / "other_labels", config(), schema=load_preset("hc18"),
                  init_from=base)
    with pytest.raises(UsgenError, match="same ones"):
        train_sdm(triples(), tmp_path / "other_classes", config(), schema=load_preset("busi"),
                  classes=["cyst"], init_from=base)
    (base / "unet" / "config.json").write_text("{")
    with pytest.raises(UsgenError, match="no readable UNet description"):
        train_sdm(triples(), tmp_path / "broken", config(), schema=load_preset("busi"),
                  init_from=base)


def test_augmentation_keeps_fine_texture():
    """The affine of the augmentation must not blur speckle: the model learns what it sees. A
    bilinear warp keeps a median 0.55 of a noise image's Laplacian, Lanczos 0.85."""
    import cv2

    from usgen_desktop.synthesis.training.data import augment

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    lab = np.zeros_like(img)
    ratios = []
    for _ in range(20):
        out, _ = augment(img, lab, rng)
        ratios.append(cv2.Laplacian(out, cv2.CV_32F).std() / cv2.Laplacian(img, cv2.CV_32F).std())
    assert np.median(ratios) > 0.75, ratios
