"""``shipped_model_for(schema)``: which shipped sdm model (if any) is made for a label schema.

``write_model`` makes model folders for these tests and the CLI/GUI ones: by default only the
description and an empty weights file (enough to be found, no torch), with ``real`` a tiny
random UNet that samples in milliseconds (never the shipped model, ~1.5 s an image)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from usgen_desktop.core.labels import load_preset
from usgen_desktop.synthesis.request import shipped_model_for

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
            attention_head_dim=4)


def write_model(folder: Path, schema: str, real: bool = False,
                recommended: dict | None = None) -> Path:
    """An sdm model folder for the preset ``schema`` at ``folder``; returns ``folder``."""
    sch = load_preset(schema)
    if real:
        import torch

        from usgen_desktop.synthesis.backends.sdm import SdmConfig, build_unet, save_model

        torch.manual_seed(0)
        cfg = SdmConfig(size=(32, 32), schema=sch, classes=list(sch.classes))
        save_model(build_unet(cfg, **TINY), cfg, folder)
    else:
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
        (folder / "usgen_model.json").write_text(json.dumps({
            "kind": "sdm", "size": [32, 32], "schema": sch.to_dict(),
            "classes": list(sch.classes), "label_ids": sorted(sch.ids)}))
    if recommended is not None:
        path = folder / "usgen_model.json"
        data = json.loads(path.read_text())
        data["recommended"] = recommended
        path.write_text(json.dumps(data))
    return folder


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("USGEN_MODELS", str(root))
    return root


def test_the_model_made_for_the_schema_is_found(models):
    busi = write_model(models / "sdm-default", "busi")
    hc18 = write_model(models / "sdm-hc18", "hc18")
    assert shipped_model_for(load_preset("busi")) == busi
    assert shipped_model_for(load_preset("hc18")) == hc18
    assert shipped_model_for(load_preset("echo")) is None  # no model for it: speckle
    assert shipped_model_for(None) is None


def test_sdm_default_wins_when_several_match(models):
    write_model(models / "a-busi", "busi")
    assert shipped_model_for(load_preset("busi")) == models / "a-busi"
    write_model(models / "sdm-default", "busi")
    assert shipped_model_for(load_preset("busi")) == models / "sdm-default"


def test_same_name_with_other_label_ids_is_no_match(models):
    from dataclasses import replace

    write_model(models / "sdm-default", "busi")
    busi = load_preset("busi")
    more = replace(busi, labels=(*busi.labels, replace(busi.labels[1], id=2)))
    assert shipped_model_for(more) is None


@pytest.mark.parametrize("damage", ["no weights", "broken json", "other kind", "not a dict",
                                    "no schema", "bad label ids"])
def test_a_broken_model_is_no_match_not_an_error(models, damage):
    folder = write_model(models / "sdm-default", "busi")
    desc = folder / "usgen_model.json"
    data = json.loads(desc.read_text())
    if damage == "no weights":
        (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    elif damage == "broken json":
        desc.write_text('{"kind": "sdm", "schema": {')
    elif damage == "other kind":
        desc.write_text(json.dumps({**data, "kind": "controlnet"}))
    elif damage == "not a dict":
        desc.write_text("[1, 2]")
    elif damage == "no schema":
        desc.write_text(json.dumps({**data, "schema": "busi"}))
    else:
        desc.write_text(json.dumps({**data, "label_ids": ["x"]}))
    assert shipped_model_for(load_preset("busi")) is None
    # a good model beside the broken one is still found
    good = write_model(models / "sdm-other", "busi")
    assert shipped_model_for(load_preset("busi")) == good


def test_no_models_folder_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("USGEN_MODELS", str(tmp_path / "nowhere"))
    assert shipped_model_for(load_preset("busi")) is None
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("USGEN_MODELS", str(tmp_path / "file"))
    assert shipped_model_for(load_preset("busi")) is None


def test_the_real_shipped_default_matches_busi_when_installed(monkeypatch):
    from usgen_desktop.paths import _install_root

    monkeypatch.delenv("USGEN_MODELS", raising=False)
    shipped = _install_root() / "models" / "sdm-default"
    if not (shipped / "unet" / "diffusion_pytorch_model.safetensors").is_file():
        pytest.skip("no shipped default model in this checkout")
    assert shipped_model_for(load_preset("busi")) == shipped


def test_a_sector_model_refuses_a_label_map_without_the_sector(tmp_path):
    """The HC18 model learnt the fan as label 2: a map without it would come out as a head in
    black, so generation stops with the fix in one sentence; with the fan it generates."""
    import numpy as np

    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.synthesis.request import GenerationRequest, run

    folder = write_model(tmp_path / "sdm-hc18", "hc18", real=True)
    schema = load_preset("hc18")
    head = np.zeros((32, 40), np.uint8)
    head[10:20, 12:24] = 1
    req = GenerationRequest([LabelMap(head)], schema, backend="sdm", model_dir=str(folder),
                            steps=2, device="cpu")
    from usgen_desktop.errors import MissingSectorError

    # one short sentence (the GUI adds a "Detect the fan" button, the CLI its command)
    with pytest.raises(MissingSectorError, match="no 'sector' region.*fan.*needs") as info:
        run(req)
    assert "usgen sector detect" in info.value.cli_hint
    # with names (the GUI and the CLI pass document / file names) it says which map it is
    two = GenerationRequest([LabelMap(head), LabelMap(head)], schema, backend="sdm",
                            model_dir=str(folder), steps=2, device="cpu",
                            names=["scan_017", "scan_018"])
    with pytest.raises(UsgenError, match="^'scan_017' has no 'sector' region"):
        run(two)
    fan = head.copy()
    fan[(fan == 0) & (np.arange(40)[None, :] > 4)] = schema.sector_id
    out = run(GenerationRequest([LabelMap(fan)], schema, backend="sdm", model_dir=str(folder),
                                steps=2, device="cpu"))
    assert out[0].image.shape == (32, 40)


@pytest.mark.parametrize("name", ["sdm-default", "sdm-hc18"])
def test_the_shipped_models_carry_a_texture_refiner(name):
    """Each shipped sdm model has its refiner (the second stage at the label map's size), and
    it loads from safetensors with the recommended steps its card names."""
    from usgen_desktop.paths import models_dir

    folder = models_dir() / name
    if not (folder / "usgen_model.json").is_file():
        pytest.skip("the shipped models are not installed")
    from usgen_desktop.synthesis.backends.refiner import find_refiner, load_refiner

    found = find_refiner(folder)
    assert found is not None
    unet, cfg = load_refiner(found)
    assert cfg.base_size == (128, 128) and cfg.steps == 12
    assert sum(p.numel() for p in unet.parameters()) < 5_000_000
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 100 * 2**20  # each shipped model stays under 100 MB
