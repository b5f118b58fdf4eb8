"""`usgen generate` end to end on small label maps made in the test (speckle backend; the
default ``--backend auto`` is tested on tiny models made in the test, never the shipped one)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from usgen_desktop.cli.main import main


def _dataset(root: Path, n: int = 3, shape: tuple[int, int] = (48, 64)) -> Path:
    """images/ + masks/ + usgen.json (busi schema) with a lesion of growing size per map."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    classes = {}
    for i in range(n):
        mask = np.zeros(shape, np.uint8)
        cv2.circle(mask, (shape[1] // 2, shape[0] // 2), 6 + 3 * i, 1, -1)
        cv2.imwrite(str(root / "masks" / f"case{i}.png"), mask)
        cv2.imwrite(str(root / "images" / f"case{i}.png"),
                    rng.integers(0, 255, shape, dtype=np.uint8))
        classes[f"case{i}"] = "benign" if i % 2 == 0 else "malignant"
    (root / "usgen.json").write_text(json.dumps({"schema": "busi", "classes": classes}))
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for sub in ("images", "masks", "imagesTr", "labelsTr") if (folder / sub).is_dir()
            for p in sorted((folder / sub).iterdir())}


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]


def _gen(*args: str) -> int:
    """``usgen generate`` with the speckle simulator unless the test names a backend: the
    default (auto) would run the shipped diffusion model on BUSI label maps, which is slow."""
    backend = [] if "--backend" in args else ["--backend", "speckle"]
    return main(["generate", "--no-progress", *backend, *args])


def test_generates_pairs_with_provenance(tmp_path):
    ds = _dataset(tmp_path / "ds")
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--per-mask", "2", "--seed", "7", "--out", str(out)) == 0
    files = _files(out)
    assert len(files) == 12  # 3 maps x 2 images, image + mask each
    recs = _manifest(out)
    assert sorted(r["item"] for r in recs) == list(range(6))
    for r in recs:
        img = cv2.imread(str(out / r["image"]), cv2.IMREAD_UNCHANGED)
        lab = cv2.imread(str(out / r["label"]), cv2.IMREAD_UNCHANGED)
        src = cv2.imread(str(ds / "masks" / f"{r['name']}.png"), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.shape == src.shape
        assert np.array_equal(lab, src)  # the mask written is the exact label map used
        prov = r["provenance"]
        assert prov["backend"] == "speckle" and prov["base_seed"] == 7
        assert prov["model_hash"] and prov["class"] in ("benign", "malignant")
    # two images of one map differ (different seeds); equal seeds give equal images below
    assert files["images/case0_000.png"] != files["images/case0_001.png"]


def test_shards_union_equals_unsharded_run(tmp_path):
    ds = _dataset(tmp_path / "ds")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _gen("--masks", str(ds), "--per-mask", "2", "--seed", "3", "--out", str(whole)) == 0
    union: dict[str, bytes] = {}
    for i in (1, 2, 3):
        shard = parts / f"s{i}"
        assert _gen("--masks", str(ds), "--per-mask", "2", "--seed", "3", "--out", str(shard),
                    "--shard", f"{i}/3") == 0
        got = _files(shard)
        assert not (set(got) & set(union))  # shards are disjoint
        union.update(got)
    assert union == _files(whole)  # same names, same bytes
    # shards may also share one folder: each resumes around the other's pairs
    shared = tmp_path / "shared"
    for i in (2, 1):
        assert _gen("--masks", str(ds), "--per-mask", "2", "--seed", "3", "--out", str(shared),
                    "--shard", f"{i}/2") == 0
    assert _files(shared) == _files(whole)
    assert sorted(r["item"] for r in _manifest(shared)) == list(range(6))


def test_interrupted_run_resumes_without_redoing_finished_pairs(tmp_path, capsys):
    ds = _dataset(tmp_path / "ds")
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--per-mask", "2", "--out", str(out)) == 0
    reference = _files(out)
    # Interrupt after 4 pairs: the last two pairs never got their line; one left a torn line
    # and a lone image file.
    lines = (out / "manifest.jsonl").read_text().splitlines()
    kept = lines[:4]
    (out / "manifest.jsonl").write_text("\n".join(kept) + "\n" + lines[4][:25])
    for rec in map(json.loads, lines[4:]):
        (out / rec["label"]).unlink()
    (out / json.loads(lines[5])["image"]).unlink()
    before = {r["image"]: (out / r["image"]).stat().st_mtime_ns for r in map(json.loads, kept)}
    capsys.readouterr()
    assert _gen("--masks", str(ds), "--per-mask", "2", "--out", str(out)) == 0
    assert "wrote 2 pairs" in capsys.readouterr().err
    after = {k: (out / k).stat().st_mtime_ns for k in before}
    assert after == before  # finished pairs were not rewritten
    assert _files(out) == reference
    assert sorted(r["item"] for r in _manifest(out)) == list(range(6))
    # a third run has nothing left to do
    assert _gen("--masks", str(ds), "--per-mask", "2", "--out", str(out)) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_a_different_run_in_the_same_folder_is_refused(tmp_path, capsys):
    ds = _dataset(tmp_path / "ds")
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--out", str(out)) == 0
    capsys.readouterr()
    assert _gen("--masks", str(ds), "--seed", "99", "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different generation run" in err


def test_nnunet_format(tmp_path):
    ds = _dataset(tmp_path / "ds", n=2)
    out = tmp_path / "raw"
    assert _gen("--masks", str(ds), "--format", "nnunet", "--out", str(out)) == 0
    folder = out / "Dataset501_USGenSynthetic"
    desc = json.loads((folder / "dataset.json").read_text())
    assert desc["numTraining"] == 2 and desc["file_ending"] == ".png"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        "case0_000_0000.png", "case1_000_0000.png"]


def test_size_and_class_override(tmp_path):
    ds = _dataset(tmp_path / "ds", n=1)
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--size", "40x50", "--class", "malignant",
                "--param", "dynamic_range_db=50", "--out", str(out)) == 0
    rec = _manifest(out)[0]
    img = cv2.imread(str(out / rec["image"]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (40, 50)
    assert rec["provenance"]["class"] == "malignant"
    assert rec["provenance"]["params"] == {"dynamic_range_db": 50}


def test_demo(tmp_path):
    from usgen_desktop.paths import resources_dir

    out = tmp_path / "demo"
    assert _gen("--demo", "--out", str(out)) == 0
    for sub, src in (("busi", resources_dir() / "demo"), ("hc18", resources_dir() / "demo/hc18")):
        recs = _manifest(out / sub)
        n_src = len(list((src / "masks").glob("*.png")))
        assert len(recs) == n_src > 0
        for r in recs:
            assert np.array_equal(
                cv2.imread(str(out / sub / r["label"]), cv2.IMREAD_UNCHANGED),
                cv2.imread(str(src / "masks" / f"{r['name']}.png"), cv2.IMREAD_UNCHANGED))
    # the fan's outside (id 0 in hc18) is black in every generated image
    for r in _manifest(out / "hc18"):
        img = cv2.imread(str(out / "hc18" / r["image"]), cv2.IMREAD_UNCHANGED)
        lab = cv2.imread(str(out / "hc18" / r["label"]), cv2.IMREAD_UNCHANGED)
        assert (lab == 0).any() and img[lab == 0].max() == 0
        assert img[lab != 0].mean() > 20


@pytest.mark.parametrize("argv, words", [
    (["--backend", "nope"], "Unknown backend 'nope'"),
    (["--format", "zip"], "Unknown format"),
    (["--shard", "4/3"], "--shard"),
    (["--size", "big"], "--size"),
    (["--device", "tpu"], None),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys, argv, words):
    ds = _dataset(tmp_path / "ds", n=1)
    code = _gen("--masks", str(ds), "--out", str(tmp_path / "o"), *argv)
    err = capsys.readouterr().err.strip()
    if argv[0] == "--device":
        # the speckle backend runs on the CPU whatever the device; it must not crash
        assert code in (0, 2)
        return
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("usgen: error:") and words in err


def test_missing_dataset_is_one_line(tmp_path, capsys):
    assert _gen("--masks", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err


def test_out_of_memory_keeps_finished_pairs_and_gives_advice(tmp_path, capsys, monkeypatch):
    from usgen_desktop.synthesis.backends import speckle

    real_generate = speckle.SpeckleBackend.generate
    calls = {"n": 0}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real_generate(self, *a, **kw)

    monkeypatch.setattr(speckle.SpeckleBackend, "generate", flaky)
    ds = _dataset(tmp_path / "ds")
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ran out of memory" in err and "smaller batch" in err
    assert len(_manifest(out)) == 2  # the two finished pairs were kept


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path, capsys):
    ds = _dataset(tmp_path / "ds", n=1)
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--param", "probe=banana", "--out", str(out)) == 2
    assert "Unknown probe" in capsys.readouterr().err
    assert not out.exists()  # so the corrected command can use the same folder
    assert _gen("--masks", str(ds), "--out", str(out)) == 0


def test_ctrl_c_keeps_finished_pairs_and_the_next_run_completes(tmp_path, capsys, monkeypatch):
    from usgen_desktop.synthesis.backends import speckle

    ds = _dataset(tmp_path / "ds")
    whole = tmp_path / "whole"
    assert _gen("--masks", str(ds), "--per-mask", "2", "--out", str(whole)) == 0
    real_generate = speckle.SpeckleBackend.generate
    calls = {"n": 0}

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_generate(self, *a, **kw)

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(speckle.SpeckleBackend, "generate", interrupted)
        assert _gen("--masks", str(ds), "--per-mask", "2", "--out", str(out)) == 130
    assert "finished items were kept" in capsys.readouterr().err
    assert len(_manifest(out)) == 3
    assert _gen("--masks", str(ds), "--per-mask", "2", "--out", str(out)) == 0
    assert _files(out) == _files(whole)


def test_shipped_demo_dataset_opens_with_its_schemas_and_classes():
    from usgen_desktop.io import open_dataset
    from usgen_desktop.paths import resources_dir

    demo = resources_dir() / "demo"
    size = sum(p.stat().st_size for p in demo.rglob("*") if p.is_file())
    assert size < 2_000_000
    busi = open_dataset(demo)
    assert busi.schema.name == "busi" and len(busi.documents) >= 4
    classes = {d.tags.get("class") for d in busi.documents}
    assert classes == {"benign", "malignant", "normal"}
    for d in busi.documents:
        assert d.image is not None and d.image.height == d.labels.shape[0]
        assert d.labels.data.any() == (d.tags["class"] != "normal")
    hc = open_dataset(demo / "hc18")
    assert hc.schema.name == "hc18"
    for d in hc.documents:
        assert set(d.labels.ids()) == {0, 1, 2}  # outside, head, fan


# -- --backend auto (the default) -------------------------------------------------------------
def _auto(*args: str) -> int:
    return main(["generate", "--no-progress", *args])


def test_demo_by_default_uses_the_shipped_model_for_busi_and_speckle_for_hc18(
        tmp_path, capsys, monkeypatch):
    from tests.unit.test_shipped_model import write_model
    from usgen_desktop.paths import resources_dir

    models = tmp_path / "models"
    tiny = write_model(models / "sdm-default", "busi", real=True)
    monkeypatch.setenv("USGEN_MODELS", str(models))
    out = tmp_path / "demo"
    assert _auto("--demo", "--steps", "2", "--device", "cpu", "--out", str(out)) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "--backend" in x]
    assert len(lines) == 2  # one line per dataset: what it chose and how to choose the other
    assert str(tiny) in lines[0] and "--backend speckle" in lines[0]
    assert "speckle simulator" in lines[1] and "hc18" in lines[1]
    busi, hc18 = _manifest(out / "busi"), _manifest(out / "hc18")
    assert len(busi) == len(list((resources_dir() / "demo" / "masks").glob("*.png"))) > 0
    assert {r["provenance"]["backend"] for r in busi} == {"sdm"}
    assert {r["provenance"]["model_dir"] for r in busi} == {str(tiny)}
    assert {r["provenance"]["backend"] for r in hc18} == {"speckle"}
    # the run file records the backend actually used, so a resume compares like with like
    run_busi = json.loads((out / "busi" / "generate.json").read_text())
    run_hc18 = json.loads((out / "hc18" / "generate.json").read_text())
    assert (run_busi["backend"], run_busi["model_dir"]) == ("sdm", str(tiny))
    assert (run_hc18["backend"], run_hc18["model_dir"], run_hc18["steps"]) == ("speckle", None, 2)
    assert run_hc18["guidance"] == 1.0  # not the busi model's choice carried over
    # the same run named explicitly resumes it (nothing left to do)
    assert _gen("--masks", str(resources_dir() / "demo"), "--backend", "sdm", "--steps", "2",
                "--device", "cpu", "--out", str(out / "busi")) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_auto_is_speckle_without_a_model_for_the_schema_and_sdm_with_model(
        tmp_path, capsys, monkeypatch):
    from tests.unit.test_shipped_model import write_model

    models = tmp_path / "models"
    write_model(models / "sdm-hc18", "hc18")  # another schema's model: no match for busi
    monkeypatch.setenv("USGEN_MODELS", str(models))
    ds = _dataset(tmp_path / "ds", n=1)
    out = tmp_path / "out"
    assert _auto("--masks", str(ds), "--out", str(out)) == 0
    assert "speckle simulator" in capsys.readouterr().err
    assert _manifest(out)[0]["provenance"]["backend"] == "speckle"
    # --model means sdm when the backend is left on auto
    mine = write_model(tmp_path / "mine", "busi", real=True)
    out2 = tmp_path / "out2"
    assert _auto("--masks", str(ds), "--model", str(mine), "--steps", "2", "--device", "cpu",
                 "--out", str(out2)) == 0
    prov = _manifest(out2)[0]["provenance"]
    assert prov["backend"] == "sdm" and prov["model_dir"] == str(mine)


def test_backend_sdm_without_a_model_takes_the_shipped_model_for_the_labels(
        tmp_path, capsys, monkeypatch):
    # `--backend sdm` on HC18 label maps used to take sdm-default (BUSI) and fail on the
    # class 'head'; it now takes the shipped model made for those labels
    from tests.unit.test_shipped_model import write_model
    from usgen_desktop.paths import resources_dir

    models = tmp_path / "models"
    write_model(models / "sdm-default", "busi", real=True)
    hc18 = write_model(models / "sdm-hc18", "hc18", real=True)
    monkeypatch.setenv("USGEN_MODELS", str(models))
    out = tmp_path / "out"
    assert _gen("--masks", str(resources_dir() / "demo" / "hc18"), "--backend", "sdm",
                "--steps", "2", "--device", "cpu", "--out", str(out)) == 0
    assert {r["provenance"]["model_dir"] for r in _manifest(out)} == {str(hc18)}
