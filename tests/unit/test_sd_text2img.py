"""Text-to-image and img2img with the controlnet backend on tiny Stable Diffusion components made
in code (the recipe of seeds/002: class prompt, LoRA, textual-inversion token, img2img at a
strength the user sets): no ControlNet means text-to-image, the strength changes the image and
reaches the manifest, and a key the backend does not take, or cannot use, is one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_controlnet import build_tiny_sd, req
from usgen_desktop.core.labels import LabelSchema, load_preset
from usgen_desktop.errors import ModelError, UsgenError
from usgen_desktop.synthesis.request import run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_sd(tmp_path_factory.mktemp("t2i_sd"))


def test_text_to_image_without_a_controlnet_and_img2img_strengths_differ(tiny):
    sd, _ = tiny
    seen: list[int] = []
    plain = run(req(sd, None, strength=0.0), progress=lambda p: seen.append(p.done))[0]
    assert plain.image.shape == (30, 40) and plain.image.dtype == np.uint8
    assert plain.provenance["mode"] == "text-to-image" and plain.provenance["strength"] == 0.0
    assert max(seen) == 2  # no img2img steps at strength 0
    half = run(req(sd, None, strength=0.5))[0]
    full = run(req(sd, None, strength=1.0))[0]
    assert half.provenance["strength"] == 0.5 and full.provenance["strength"] == 1.0
    # the refinement pass changes the image, and a stronger one changes it differently
    assert not np.array_equal(plain.image, half.image)
    assert not np.array_equal(half.image, full.image)
    # the same request again: the same image (CPU generator)
    assert np.array_equal(half.image, run(req(sd, None, strength=0.5))[0].image)


def test_strength_param_overrides_the_request_and_is_recorded(tiny):
    sd, cn = tiny
    a = run(req(sd, cn, strength=0.5, params={"strength": 0}))[0]
    b = run(req(sd, cn, strength=0.0))[0]
    assert a.provenance["strength"] == 0.0 and a.provenance["mode"] == "controlnet"
    assert np.array_equal(a.image, b.image)  # strength=0 in params really turns img2img off


def test_prompt_comes_from_the_schema_for_the_class(tiny):
    from usgen_desktop.synthesis.backends.controlnet import class_prompt

    schema = load_preset("busi").with_prompt("malignant", "ultrasound image of breast tissue")
    assert class_prompt("malignant", None, None, schema) == "ultrasound image of breast tissue"
    assert class_prompt("benign", None, None, schema).startswith("ultrasound image of breast with")
    again = LabelSchema.from_json(schema.to_json())
    assert again.prompts == {"malignant": "ultrasound image of breast tissue"}
    assert LabelSchema.from_json(again.with_prompt("malignant", "").to_json()).prompts == {}
    sd, _ = tiny
    own = run(req(sd, None, strength=0.0, schema=schema))[0].image
    builtin = run(req(sd, None, strength=0.0))[0].image
    assert not np.array_equal(own, builtin)  # the schema's prompt reached the model


@pytest.mark.parametrize("params, words", [
    ({"bogus": 1}, "setting 'bogus'"),
    ({"dynamic_range": 10}, "setting 'dynamic_range'"),
    ({"strength": 1.5}, "strength must be a number from 0 to 1"),
    ({"strength": "high"}, "strength must be a number from 0 to 1"),
    ({"resolution": 30}, "multiple of 8"),
    ({"low_memory": "yes"}, "low_memory must be true or false"),
    ({"ti_embedding": "x.safetensors"}, "needs its token"),
    ({"ti_token": "<us>"}, "needs its embedding"),
])
def test_unknown_or_unusable_keys_are_refused(tiny, params, words):
    sd, _ = tiny
    with pytest.raises(UsgenError, match=words) as info:
        run(req(sd, None, params=params))
    assert str(info.value).count(".") <= 3 and "\n" not in str(info.value)


def test_pickle_only_folders_are_refused(tiny, tmp_path):
    import shutil

    sd, cn = tiny
    pickled = tmp_path / "sd_bin"
    shutil.copytree(sd, pickled)
    for w in (pickled / "unet").glob("*.safetensors"):
        w.rename(w.with_suffix(".bin"))
    with pytest.raises(ModelError, match="only pickled weights"):
        run(req(pickled, None))
    cn_bin = tmp_path / "cn_bin"
    shutil.copytree(cn, cn_bin)
    for w in cn_bin.glob("*.safetensors"):
        w.rename(w.with_suffix(".bin"))
    with pytest.raises(ModelError, match="safetensors only"):
        run(req(sd, cn_bin))
    lora_bin = tmp_path / "lora.bin"
    lora_bin.write_bytes(b"\0" * 8)
    with pytest.raises(ModelError, match="safetensors"):
        run(req(sd, None, params={"lora": str(lora_bin)}))


def test_cli_prompt_and_strength_reach_the_manifest(tiny, tmp_path, capsys):
    import cv2

    from usgen_desktop.cli.main import main

    sd, _ = tiny
    ds = tmp_path / "ds"
    (ds / "masks").mkdir(parents=True)
    mask = np.zeros((24, 32), np.uint8)
    mask[8:16, 10:20] = 1
    cv2.imwrite(str(ds / "masks" / "a.png"), mask)
    (ds / "usgen.json").write_text(json.dumps({"schema": "busi", "classes": {"a": "benign"}}))

    def gen(out: str, *extra: str) -> int:
        return main(["generate", "--no-progress", "--backend", "controlnet", "--model", str(sd),
                     "--masks", str(ds), "--steps", "2", "--device", "cpu", "--param",
                     "resolution=32", "--out", str(tmp_path / out), *extra])

    assert gen("o1", "--strength", "0.5", "--prompt", "ultrasound image of breast") == 0
    rec = json.loads((tmp_path / "o1" / "manifest.jsonl").read_text().splitlines()[0])
    prov = rec["provenance"]
    assert prov["strength"] == 0.5 and prov["mode"] == "text-to-image"
    assert prov["prompt"] == "ultrasound image of breast"
    assert gen("o2", "--param", "strength=0") == 0
    rec2 = json.loads((tmp_path / "o2" / "manifest.jsonl").read_text().splitlines()[0])
    assert rec2["provenance"]["strength"] == 0.0
    img1 = cv2.imread(str(tmp_path / "o1" / rec["image"]), cv2.IMREAD_UNCHANGED)
    img2 = cv2.imread(str(tmp_path / "o2" / rec2["image"]), cv2.IMREAD_UNCHANGED)
    assert not np.array_equal(img1, img2)
    capsys.readouterr()
    assert gen("o3", "--param", "bogus=1") == 2
    err = capsys.readouterr().err.strip()
    assert "no setting 'bogus'" in err and err.count("\n") == 0
    assert not (tmp_path / "o3").exists()
    assert gen("o4", "--strength", "0.2", "--param", "strength=0.4") == 2
    assert "disagree" in capsys.readouterr().err
    assert main(["generate", "--no-progress", "--backend", "speckle", "--masks", str(ds),
                 "--strength", "0.5", "--out", str(tmp_path / "o5")]) == 2
    assert "controlnet backend only" in capsys.readouterr().err
