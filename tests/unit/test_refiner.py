"""The texture refiner (sdm's second stage) on tiny models: geometry kept, one image per seed,
odd sizes, resumable training, and its place in the sdm backend (provenance, off switch,
inpainting at full size)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import lesion_pair
from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.errors import ModelError
from usgen_desktop.synthesis.request import GenerationRequest, run

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


def _images(n: int = 6) -> list[np.ndarray]:
    return [lesion_pair(72, 88, seed=i)[0] for i in range(n)]


def _tiny_train_config(**kw):
    from usgen_desktop.synthesis.training.refiner import RefinerTrainConfig

    base = dict(base_size=16, patch=32, steps=6, batch=2, warmup=1, checkpoint_every=3,
                sample_every=0, sample_steps=2, device="cpu", **TINY)
    base.update(kw)
    return RefinerTrainConfig(**base)


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory) -> Path:
    from usgen_desktop.synthesis.training.refiner import train_refiner

    out = tmp_path_factory.mktemp("refiner") / "run"
    train_refiner(_images(), out, _tiny_train_config(steps=40, lr=2e-3))
    return out


def test_degrade_is_the_apps_resize_path():
    from usgen_desktop.synthesis.backends.refiner import degrade
    from usgen_desktop.synthesis.backends.sdm import resize_image

    img = lesion_pair(60, 90, seed=1)[0]
    low = degrade(img, (16, 16))
    assert low.shape == img.shape and low.dtype == np.uint8
    assert np.array_equal(low, resize_image(resize_image(img, (16, 16)), img.shape))
    # the round trip takes away fine detail: less energy in the Laplacian
    import cv2

    lap = lambda a: float(np.abs(cv2.Laplacian(a.astype(np.float32), cv2.CV_32F)).mean())  # noqa: E731
    assert lap(low) < 0.5 * lap(img)
    assert lap(degrade(img, (16, 16), blur=1.0)) < lap(low)


def test_same_seed_same_image_and_odd_sizes(refiner_dir):
    from usgen_desktop.synthesis.backends.refiner import load_refiner, refine

    unet, cfg = load_refiner(refiner_dir)
    for shape in [(37, 101), (64, 48), (5, 300), (129, 17)]:
        img = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
        a = refine(unet, cfg, img, seed=3, steps=2)
        b = refine(unet, cfg, img, seed=3, steps=2)
        c = refine(unet, cfg, img, seed=4, steps=2)
        assert a.shape == shape and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)
    keep = np.zeros((37, 101), bool)
    keep[:, :20] = True
    img = np.full((37, 101), 90, np.uint8)
    out = refine(unet, cfg, img, seed=0, steps=2, keep=keep)
    assert np.array_equal(out[keep], img[keep])


def test_refining_keeps_the_lesion_where_the_image_has_it(refiner_dir):
    """Geometry: a lesion found by thresholding the refined image overlaps the drawn one about
    as well as in the enlarged image and in the real image (Dice does not drop)."""
    import cv2

    from usgen_desktop.synthesis.backends.refiner import degrade, load_refiner, refine

    unet, cfg = load_refiner(refiner_dir)

    def dice_to_mask(img, mask):
        smooth = cv2.GaussianBlur(img, (0, 0), 3)
        dark = smooth < 0.5 * np.median(smooth[mask == 0])
        m = mask > 0
        return 2 * (dark & m).sum() / (dark.sum() + m.sum())

    for seed in range(3):
        img, mask = lesion_pair(96, 128, seed=10 + seed)
        low = degrade(img, (16, 16))
        out = refine(unet, cfg, low, seed=seed, steps=4)
        # a tiny model adds speckle of the right size but not yet of the right local contrast
        # (too much inside the dark lesion), hence a few hundredths of tolerance
        floor = min(dice_to_mask(low, mask), dice_to_mask(img, mask))
        assert dice_to_mask(out, mask) >= floor - 0.06 and floor > 0.7


def test_training_lowers_loss_and_resumes_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    from usgen_desktop.synthesis.training.refiner import train_refiner

    straight = train_refiner(_images(), tmp_path / "a", _tiny_train_config(steps=6))
    part = train_refiner(_images(), tmp_path / "b", _tiny_train_config(steps=3))
    assert part.step == 3
    resumed = train_refiner(_images(), tmp_path / "b", _tiny_train_config(steps=6), resume=True)
    assert resumed.step == 6
    assert resumed.losses == pytest.approx(straight.losses)
    wa = load_file(str(tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    longer = train_refiner(_images(), tmp_path / "c", _tiny_train_config(steps=60, lr=2e-3))
    assert np.mean(longer.losses[-10:]) < np.mean(longer.losses[:10])


def test_broken_refiner_folders_are_model_errors(refiner_dir, tmp_path):
    from usgen_desktop.synthesis.backends.refiner import load_refiner

    with pytest.raises(ModelError, match="not a texture refiner"):
        load_refiner(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((refiner_dir / "usgen_model.json").read_text())
    (bad / "usgen_model.json").write_text(json.dumps(dict(cfg, base_size=[-5, 0])))
    with pytest.raises(ModelError, match="invalid"):
        load_refiner(bad)
    (bad / "usgen_model.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="no weights"):
        load_refiner(bad)
    (bad / "unet").mkdir()
    (bad / "unet" / "config.json").write_text((refiner_dir / "unet" / "config.json").read_text())
    (bad / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match="damaged"):
        load_refiner(bad)


# -- in the sdm backend ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdm_with_refiner(tmp_path_factory, refiner_dir) -> Path:
    import shutil

    import torch

    from usgen_desktop.synthesis.backends.sdm import SdmConfig, build_unet, save_model

    torch.manual_seed(0)
    cfg = SdmConfig(size=(16, 16), schema=load_preset("busi"),
                    classes=["normal", "benign", "malignant"])
    unet = build_unet(cfg, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                      attention_head_dim=4)
    folder = tmp_path_factory.mktemp("sdm") / "model"
    save_model(unet, cfg, folder)
    shutil.copytree(refiner_dir, folder / "refiner", ignore=shutil.ignore_patterns("checkpoints"))
    return folder


def _req(folder: Path, h: int = 50, w: int = 70, **kw) -> GenerationRequest:
    data = np.zeros((h, w), np.uint8)
    data[h // 4:h // 2, w // 4:w // 2] = 1
    base = dict(label_maps=[LabelMap(data)], schema=load_preset("busi"), backend="sdm",
                model_dir=str(folder), classes=["benign"], steps=2, device="cpu", threads=1)
    base.update(kw)
    return GenerationRequest(**base)


def test_sdm_refines_at_the_label_maps_size_and_records_it(sdm_with_refiner):
    steps = []
    res = run(_req(sdm_with_refiner), progress=steps.append)[0]
    assert res.image.shape == (50, 70)
    assert len(res.provenance["refiner_hash"]) == 16
    plain = run(_req(sdm_with_refiner, params={"refine": "0"}))[0]
    assert "refiner_hash" not in plain.provenance
    assert not np.array_equal(res.image, plain.image)
    # the refiner adds detail: more Laplacian energy than the plain enlargement
    import cv2

    lap = lambda a: float(np.abs(cv2.Laplacian(a.astype(np.float32), cv2.CV_32F)).mean())  # noqa: E731
    assert lap(res.image) > lap(plain.image)
    # progress covers both stages and ends at its total
    assert steps[-1].done == steps[-1].total and steps[-1].total > 2
    again = run(_req(sdm_with_refiner))[0]
    assert np.array_equal(again.image, res.image)


def test_inpainting_with_refiner_keeps_the_outside(sdm_with_refiner):
    init = np.random.default_rng(1).integers(0, 255, (50, 70)).astype(np.uint8)
    mask = np.zeros((50, 70), np.uint8)
    mask[10:30, 20:45] = 1
    res = run(_req(sdm_with_refiner, init_images=[init], inpaint_masks=[mask]))[0]
    assert np.array_equal(res.image[mask == 0], init[mask == 0])
    assert not np.array_equal(res.image[mask > 0], init[mask > 0])


def test_auto_threads_leaves_busy_cores_alone():
    from usgen_desktop.synthesis.devices import auto_threads

    assert auto_threads(cores=2, load=0.0) == 2
    assert auto_threads(cores=2, load=1.0) == 1
    assert auto_threads(cores=2, load=5.0) == 1
    assert auto_threads(cores=16, load=3.2) == 13


# -- the texture's gain --------------------------------------------------------------------------
def test_gain_scales_the_drawn_texture_and_round_trips(refiner_dir, tmp_path):
    import shutil

    from usgen_desktop.synthesis.backends.refiner import load_refiner, refine

    unet, cfg = load_refiner(refiner_dir)
    assert cfg.gain == 1.0  # a fresh run is uncalibrated
    img = np.full((40, 56), 120, np.uint8)
    one = refine(unet, cfg, img, seed=5, steps=2, gain=1.0).astype(np.float32) - 120
    two = refine(unet, cfg, img, seed=5, steps=2, gain=2.0).astype(np.float32) - 120
    assert np.abs(one).mean() > 0.5
    inside = (two > -120) & (two < 135)  # where the doubled texture is not clipped
    assert inside.mean() > 0.5
    assert np.abs(two - 2 * one)[inside].max() <= 1.0  # twice the texture, up to rounding
    # the gain lives in the folder's config and is what refine uses by default
    folder = tmp_path / "r"
    shutil.copytree(refiner_dir, folder, ignore=shutil.ignore_patterns("checkpoints", "samples"))
    d = json.loads((folder / "usgen_model.json").read_text())
    d["recommended"]["gain"] = 2.0
    (folder / "usgen_model.json").write_text(json.dumps(d))
    unet2, cfg2 = load_refiner(folder)
    assert cfg2.gain == 2.0 and cfg2.to_dict()["recommended"]["gain"] == 2.0
    assert np.array_equal(refine(unet2, cfg2, img, seed=5, steps=2).astype(np.float32) - 120, two)
    d["recommended"]["gain"] = 40.0
    (folder / "usgen_model.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match="invalid"):
        load_refiner(folder)


def test_calibrate_gain_finds_the_missing_fine_power():
    import cv2

    from usgen_desktop.synthesis.backends.refiner import calibrate_gain

    rng = np.random.default_rng(0)
    real = [np.clip(128 + 40 * rng.standard_normal((160, 200)), 0, 255).astype(np.uint8)
            for _ in range(4)]
    enlarged = [cv2.GaussianBlur(r, (0, 0), 3.0) for r in real]
    # a refiner that draws half of the missing texture (in amplitude): the answer is a gain of 2
    half = [np.clip(e + 0.5 * (r.astype(np.float32) - e) + 0.5, 0, 255).astype(np.uint8)
            for r, e in zip(real, enlarged, strict=True)]
    gain, info = calibrate_gain(real, enlarged, half)
    assert 1.85 <= gain <= 2.15
    assert info["finest_octave_ratio"]["1.0"] < 0.35  # a quarter of the power at gain 1
    exact, _ = calibrate_gain(real, enlarged, real)
    assert 0.95 <= exact <= 1.05


def test_fine_tuning_a_refiner_keeps_its_gain(refiner_dir, tmp_path):
    import shutil

    from usgen_desktop.synthesis.backends.refiner import load_refiner
    from usgen_desktop.synthesis.training.refiner import train_refiner

    folder = tmp_path / "r"
    shutil.copytree(refiner_dir, folder, ignore=shutil.ignore_patterns("checkpoints", "samples"))
    d = json.loads((folder / "usgen_model.json").read_text())
    d["recommended"]["gain"] = 1.35
    (folder / "usgen_model.json").write_text(json.dumps(d))
    train_refiner(_images(), tmp_path / "ft", _tiny_train_config(steps=2), init_from=folder)
    assert load_refiner(tmp_path / "ft")[1].gain == 1.35


def test_calibrating_the_gain_draws_at_the_models_recommended_guidance(sdm_with_refiner,
                                                                       tmp_path):
    import shutil

    from usgen_desktop.synthesis.backends.refiner import load_refiner
    from usgen_desktop.synthesis.training.refiner import calibrate_model

    folder = tmp_path / "m"
    shutil.copytree(sdm_with_refiner, folder)
    d = json.loads((folder / "usgen_model.json").read_text())
    d["recommended"] = {"guidance": 1.5, "steps": 2}
    (folder / "usgen_model.json").write_text(json.dumps(d))
    examples = []
    for img in _images(3):
        lab = np.zeros(img.shape[:2], np.uint8)
        lab[10:30, 10:40] = 1
        examples.append((img, lab, "benign"))
    gain, _info = calibrate_model(folder, examples, steps=2)
    cal = json.loads((folder / "refiner" / "usgen_model.json").read_text())["training"]
    assert "guidance 1.5" in cal["calibration"]["how"]  # what the app draws with, not 2
    assert load_refiner(folder / "refiner")[1].gain == gain
    calibrate_model(folder, examples, steps=2, guidance=3.0, write=True)
    cal = json.loads((folder / "refiner" / "usgen_model.json").read_text())["training"]
    assert "guidance 3.0" in cal["calibration"]["how"]
