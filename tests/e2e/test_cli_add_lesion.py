"""`usgen generate --add-lesion CLASS` and `--inpaint` end to end, on a tiny made-up dataset and
a tiny sdm model built in the test: new image + new mask pairs, the source image kept outside
the region, and the manifest records the source and the region."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from usgen_desktop.cli.main import main


def _normal_dataset(root: Path, n: int = 2, shape: tuple[int, int] = (56, 72),
                    painted: bool = False) -> Path:
    """images/ + masks/ + usgen.json (busi schema): scans with a black frame; empty masks
    (normal) unless ``painted``, which paints a disc on each."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    classes = {}
    for i in range(n):
        img = np.zeros(shape, np.uint8)
        img[4:-6, 6:-6] = rng.integers(70, 200, (shape[0] - 10, shape[1] - 12))
        mask = np.zeros(shape, np.uint8)
        if painted:
            cv2.circle(mask, (30 + 5 * i, 26), 7, 1, -1)
        cv2.imwrite(str(root / "images" / f"scan{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"scan{i}.png"), mask)
        classes[f"scan{i}"] = "benign" if painted else "normal"
    (root / "usgen.json").write_text(json.dumps({"schema": "busi", "classes": classes}))
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.unit.test_shipped_model import write_model

    return write_model(tmp_path_factory.mktemp("m") / "tiny", "busi", real=True)


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]


def _gen(*args: str) -> int:
    return main(["generate", "--no-progress", "--steps", "2", "--device", "cpu", *args])


def test_add_lesion_writes_new_image_and_mask_and_records_source_and_region(
        tmp_path, tiny_model):
    ds = _normal_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--add-lesion", "malignant", "--count", "2",
                "--model", str(tiny_model), "--seed", "3", "--out", str(out)) == 0
    recs = _manifest(out)
    assert sorted(r["case"] for r in recs) == ["scan0_000", "scan0_001", "scan1_000",
                                               "scan1_001"]
    masks = {}
    for r in recs:
        src_path = Path(r["source"])
        assert src_path.parent == ds / "images" and src_path.stem == r["name"]
        src = cv2.imread(str(src_path), cv2.IMREAD_GRAYSCALE)
        img = cv2.imread(str(out / r["image"]), cv2.IMREAD_GRAYSCALE)
        lab = cv2.imread(str(out / r["label"]), cv2.IMREAD_UNCHANGED)
        lesion = lab == 1
        masks[r["case"]] = lesion
        assert lesion.sum() > 20 and set(np.unique(lab)) == {0, 1}
        # inside the image and its tissue, never on the black frame or the border
        assert not lesion[:4].any() and not lesion[-6:].any()
        assert not lesion[:, :6].any() and not lesion[:, -6:].any()
        inp = r["inpaint"]
        assert inp["mode"] == "add-lesion" and inp["class"] == "malignant"
        assert r["class"] == "malignant" and r["provenance"]["backend"] == "sdm"
        x0, y0, x1, y1 = inp["region"]["bbox"]
        ys, xs = np.nonzero(lesion)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        assert inp["lesion"]["area_px"] == int(lesion.sum())
        # the source image is kept outside the region; inside it is new
        outside = np.ones(src.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(img[outside], src[outside])
        assert not np.array_equal(img[lesion], src[lesion])
    # each proposal is its own: other seeds, other lesions
    assert not np.array_equal(masks["scan0_000"], masks["scan0_001"])
    # the same run again (another folder) gives the same lesions: seeded per item
    again = tmp_path / "again"
    assert _gen("--masks", str(ds), "--add-lesion", "malignant", "--count", "2",
                "--model", str(tiny_model), "--seed", "3", "--out", str(again)) == 0
    for r in _manifest(again):
        lab = cv2.imread(str(again / r["label"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(lab == 1, masks[r["case"]])


def test_add_lesion_shards_make_the_unsharded_run(tmp_path, tiny_model):
    ds = _normal_dataset(tmp_path / "ds")
    common = ["--masks", str(ds), "--add-lesion", "benign", "--count", "2", "--model",
              str(tiny_model), "--seed", "5"]
    assert _gen(*common, "--out", str(tmp_path / "all")) == 0
    for shard in ("1/2", "2/2"):
        assert _gen(*common, "--shard", shard, "--out", str(tmp_path / "parts")) == 0

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes()
                for sub in ("images", "masks") for p in sorted((folder / sub).iterdir())}

    assert files(tmp_path / "all") == files(tmp_path / "parts")
    assert len(files(tmp_path / "all")) == 8


def test_inpaint_regenerates_the_painted_region_only(tmp_path, tiny_model):
    ds = _normal_dataset(tmp_path / "ds", painted=True)
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--inpaint", "--margin", "3", "--model", str(tiny_model),
                "--out", str(out)) == 0
    recs = _manifest(out)
    assert len(recs) == 2
    for r in recs:
        src = cv2.imread(r["source"], cv2.IMREAD_GRAYSCALE)
        painted = cv2.imread(str(ds / "masks" / f"{r['name']}.png"), cv2.IMREAD_UNCHANGED)
        img = cv2.imread(str(out / r["image"]), cv2.IMREAD_GRAYSCALE)
        lab = cv2.imread(str(out / r["label"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(lab, painted)  # the user's mask, unchanged
        region = r["inpaint"]["region"]
        assert r["inpaint"]["mode"] == "painted"
        assert region["area_px"] > int((painted > 0).sum())  # grown by the margin
        x0, y0, x1, y1 = region["bbox"]
        outside = np.ones(src.shape, bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(img[outside], src[outside])
        assert not np.array_equal(img[painted > 0], src[painted > 0])


@pytest.mark.parametrize("argv, words", [
    (["--add-lesion", "benign", "--backend", "speckle"], "sdm backend"),
    (["--add-lesion", "benign", "--size", "32x32"], "--size"),
    (["--add-lesion", "cystic"], "class 'cystic'"),
    (["--inpaint"], "painted region"),
])
def test_wrong_use_is_one_line_and_exit_2(tmp_path, capsys, tiny_model, argv, words):
    ds = _normal_dataset(tmp_path / "ds")
    code = _gen("--masks", str(ds), "--model", str(tiny_model), "--out", str(tmp_path / "o"),
                *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and words in err[-1]
    assert not (tmp_path / "o").exists()


def test_add_lesion_needs_normal_scans(tmp_path, capsys, tiny_model):
    ds = _normal_dataset(tmp_path / "ds", painted=True)
    code = _gen("--masks", str(ds), "--add-lesion", "benign", "--model", str(tiny_model),
                "--out", str(tmp_path / "o"))
    assert code == 2 and "no normal scans" in capsys.readouterr().err
