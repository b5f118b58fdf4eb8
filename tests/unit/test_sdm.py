"""The sdm backend on a tiny random model (32 px, two levels): shapes, seeds, save/load,
broken folders, cancel, CFG, samplers and inpainting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.errors import ModelError, UsgenError
from usgen_desktop.synthesis.request import GenerationRequest, run

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
            attention_head_dim=4)


def tiny_config():
    from usgen_desktop.synthesis.backends.sdm import SdmConfig

    return SdmConfig(size=(32, 32), schema=load_preset("busi"),
                     classes=["normal", "benign", "malignant"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import torch

    from usgen_desktop.synthesis.backends.sdm import build_unet, save_model

    torch.manual_seed(0)
    cfg = tiny_config()
    unet = build_unet(cfg, **TINY)
    # a random init predicts almost nothing; scale the output layer so seeds visibly differ
    with torch.no_grad():
        unet.conv_out.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("sdm") / "model"
    save_model(unet, cfg, folder)
    return folder


def lesion_map(h: int = 40, w: int = 48) -> LabelMap:
    data = np.zeros((h, w), np.uint8)
    data[10:25, 12:30] = 1
    return LabelMap(data)


def req(model_dir: Path, **kw) -> GenerationRequest:
    base = dict(label_maps=[lesion_map()], schema=load_preset("busi"), backend="sdm",
                model_dir=str(model_dir), classes=["benign"], steps=2, device="cpu")
    base.update(kw)
    return GenerationRequest(**base)


def test_image_has_label_map_size_and_uint8(model_dir):
    res = run(req(model_dir, count=2))
    assert len(res) == 2
    for r in res:
        assert r.image.shape == (40, 48) and r.image.dtype == np.uint8
        assert r.provenance["backend"] == "sdm" and len(r.provenance["model_hash"]) == 16
        assert np.array_equal(r.label_map.data, lesion_map().data)
    assert not np.array_equal(res[0].image, res[1].image)  # item seeds differ


def test_same_seed_same_image_other_seed_other_image(model_dir):
    a = run(req(model_dir, seed=3))[0].image
    b = run(req(model_dir, seed=3))[0].image
    c = run(req(model_dir, seed=4))[0].image
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0


def test_samplers_and_guidance(model_dir):
    ddim = run(req(model_dir, params={"sampler": "ddim"}))[0].image
    dpm = run(req(model_dir, params={"sampler": "dpm++"}))[0].image
    cfg = run(req(model_dir, guidance=3.0))[0].image
    assert ddim.shape == dpm.shape == cfg.shape == (40, 48)
    assert not np.array_equal(cfg, dpm)  # the unconditional branch changed something
    with pytest.raises(UsgenError, match="sampler"):
        run(req(model_dir, params={"sampler": "euler-magic"}))


def test_unknown_class_is_a_user_error(model_dir):
    with pytest.raises(UsgenError, match="no class 'cyst'"):
        run(req(model_dir, classes=["cyst"]))
    assert run(req(model_dir, classes=[None]))[0].image.shape == (40, 48)


def test_a_model_without_classes_ignores_an_image_class():
    """HC18 images carry their folder's class ("head"); a model trained without classes
    generates them unconditioned, exactly as with no class at all."""
    from usgen_desktop.synthesis.backends.sdm import SdmConfig

    cfg = SdmConfig(size=(32, 32), schema=load_preset("hc18"), classes=[])
    assert cfg.class_index("head") == cfg.class_index(None) == cfg.null_class
    assert tiny_config().class_index("benign") == 1


def test_save_load_reproduces_outputs(model_dir, tmp_path):
    from usgen_desktop.synthesis.backends.sdm import (
        load_unet,
        one_hot,
        read_config,
        sample,
        save_model,
    )

    cfg = read_config(model_dir)
    unet, _ = load_unet(model_dir)
    cond = one_hot(np.pad(lesion_map(32, 32).data, 0), cfg.label_ids)[None]
    before = sample(unet, cfg, cond, [1], [7], steps=2)
    save_model(unet, cfg, tmp_path / "copy")
    unet2, _ = load_unet(tmp_path / "copy")
    after = sample(unet2, cfg, cond, [1], [7], steps=2)
    assert np.array_equal(before, after)
    # and through the public API: two folders with the same weights give the same image
    a = run(req(model_dir, seed=11))[0]
    b = run(req(tmp_path / "copy", seed=11))[0]
    assert np.array_equal(a.image, b.image)
    assert a.provenance["model_hash"] == b.provenance["model_hash"]


def test_broken_folders_are_model_errors(model_dir, tmp_path):
    import shutil

    with pytest.raises(ModelError, match="does not exist"):
        run(req(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="usgen_model.json"):
        run(req(empty))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(model_dir / "usgen_model.json", no_weights)
    with pytest.raises(ModelError, match="no weights"):
        run(req(no_weights))
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    w = damaged / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(ModelError, match="damaged"):
        run(req(damaged))
    bad_json = tmp_path / "bad_json"
    shutil.copytree(model_dir, bad_json)
    (bad_json / "usgen_model.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot be read"):
        run(req(bad_json))
    other = tmp_path / "other_kind"
    shutil.copytree(model_dir, other)
    (other / "usgen_model.json").write_text(json.dumps({"kind": "controlnet"}))
    with pytest.raises(ModelError, match="another kind"):
        run(req(other))


def test_cancel_stops_within_one_step(model_dir):
    cancel = CancelToken()
    seen = []

    def progress(p):
        seen.append(p.done)
        if p.done >= 1:
            cancel.cancel()

    res = run(req(model_dir, steps=10, count=3), progress=progress, cancel=cancel)
    assert res == []
    assert max(seen) == 1  # the step after the cancel never ran


def test_progress_carries_preview_images(model_dir):
    previews = []
    run(req(model_dir, steps=3), progress=lambda p: previews.append(p.preview))
    imgs = [p for p in previews if isinstance(p, np.ndarray)]
    assert len(imgs) >= 3 and all(i.dtype == np.uint8 for i in imgs)


def test_inpaint_keeps_the_real_image_outside_the_mask(model_dir):
    rng = np.random.default_rng(0)
    init = rng.integers(0, 255, (40, 48), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[8:28, 10:32] = 1
    res = run(req(model_dir, init_images=[init], inpaint_masks=[mask], steps=3))[0]
    assert np.array_equal(res.image[mask == 0], init[mask == 0])
    assert not np.array_equal(res.image[mask > 0], init[mask > 0])
    assert np.array_equal(res.label_map.data, lesion_map().data)
    with pytest.raises(UsgenError, match="empty"):
        run(req(model_dir, init_images=[init], inpaint_masks=[np.zeros_like(mask)]))


def test_inpaint_blend_is_zero_outside_and_one_deep_inside():
    from usgen_desktop.synthesis.backends.sdm import feather

    mask = np.zeros((100, 100), np.uint8)
    mask[20:80, 20:80] = 1
    a = feather(mask)
    assert a[mask == 0].max() == 0.0
    assert a[50, 50] == 1.0 and 0.0 < a[20, 50] < 1.0  # ramps up from the edge
    assert np.all(np.diff(a[50, 20:50]) >= 0)
