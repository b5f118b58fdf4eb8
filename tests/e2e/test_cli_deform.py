"""`usgen deform` and `usgen sector detect` end to end on a dataset made in the test."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from usgen_desktop.core.sector import Sector


def run(*args):
    return subprocess.run([sys.executable, "-m", "usgen_desktop.cli.main", *args],
                          capture_output=True, text=True, timeout=120)


def make_dataset(root, n=2):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    fan = Sector.fan((64, -20), 30, 140, -30, 30)
    fov = fan.rasterize((96, 128))
    for i in range(n):
        rng = np.random.default_rng(i)
        img = (np.clip(rng.rayleigh(50, (96, 128)), 0, 255) * fov).astype(np.uint8)
        m = np.where(fov, 2, 0).astype(np.uint8)
        cv2.ellipse(m, (64, 50 + i), (20, 14), 0, 0, 360, 1, -1)
        cv2.imwrite(str(root / "images" / f"case{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"case{i}.png"), m)
    (root / "usgen.json").write_text(json.dumps({"schema": "hc18"}))


def test_deform_writes_variants_and_manifest_and_resumes(tmp_path):
    make_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    r = run("deform", "--masks", str(tmp_path / "ds"), "--n", "3", "--seed", "0",
            "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (out / "masks").iterdir())
    assert len(files) == 6
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and {ln["source"] for ln in lines} == {"case0", "case1"}
    assert all("seed" in ln and ln["params"]["grid"] == [10, 10] for ln in lines)
    first = cv2.imread(str(out / "masks" / files[0]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(first)) <= {0, 1, 2}
    # the same seed into a new folder gives identical variants
    out2 = tmp_path / "out2"
    assert run("deform", "--masks", str(tmp_path / "ds"), "--n", "3", "--out", str(out2),
               "-q").returncode == 0
    for f in files:
        a = cv2.imread(str(out / "masks" / f), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(out2 / "masks" / f), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(a, b)
    # a second run resumes: nothing new in the manifest
    assert run("deform", "--masks", str(tmp_path / "ds"), "--n", "3", "--out", str(out),
               "-q").returncode == 0
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 6


def test_sector_detect_writes_masks_and_geometry(tmp_path):
    make_dataset(tmp_path / "ds", n=1)
    r = run("sector", "detect", str(tmp_path / "ds"), "--out", str(tmp_path / "sec"))
    assert r.returncode == 0, r.stderr
    geo = json.loads((tmp_path / "sec" / "sectors.json").read_text())
    assert geo["case0"]["kind"] == "curvilinear"
    assert abs(geo["case0"]["apex_y"] - -20) < 4
    assert (tmp_path / "sec" / "case0_sector.png").exists()


def test_bad_dataset_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("deform", "--masks", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_skip_bad_flag(tmp_path):
    make_dataset(tmp_path / "ds", n=1)
    out = tmp_path / "out"
    r = run("deform", "--masks", str(tmp_path / "ds"), "--n", "2", "--out", str(out),
            "--skip-bad", "-q")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert lines and all(not ln["problems"] for ln in lines)
    assert len(lines) == len(list((out / "masks").iterdir()))


def test_sector_labels_out_feeds_deform(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, n=1)
    # masks without the sector, as HC18 ships them: only the head
    m = cv2.imread(str(root / "masks" / "case0.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(root / "masks" / "case0.png"), (m == 1).astype(np.uint8))
    r = run("sector", "detect", str(root), "--out", str(tmp_path / "sec"),
            "--labels-out", str(tmp_path / "lab"), "--no-overlay")
    assert r.returncode == 0, r.stderr
    lab = cv2.imread(str(tmp_path / "lab" / "masks" / "case0.png"), cv2.IMREAD_UNCHANGED)
    fov = Sector.fan((64, -20), 30, 140, -30, 30).rasterize((96, 128))
    assert set(np.unique(lab)) == {0, 1, 2}
    assert (lab != 0).sum() == pytest.approx(fov.sum(), rel=0.05)
    r = run("deform", "--masks", str(tmp_path / "lab"), "--n", "2", "--out",
            str(tmp_path / "def"), "-q")
    assert r.returncode == 0, r.stderr
    for f in (tmp_path / "def" / "masks").iterdir():
        v = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(v != 0, lab != 0)  # the sector stayed put


def test_sector_detect_applies_the_fans_fixed_per_layout(tmp_path):
    from usgen_desktop.core.sector import LayoutMemory, detect_sector

    make_dataset(tmp_path / "ds", n=2)
    img = cv2.imread(str(tmp_path / "ds" / "images" / "case0.png"), cv2.IMREAD_GRAYSCALE)
    fit = detect_sector(img)
    fixed = Sector.fan((64, -20), 40, 120, -20, 20)  # the user's own, narrower fan
    memory = LayoutMemory()
    memory.remember(img.shape, fit.sector, fixed)
    (tmp_path / "layouts.json").write_text(memory.to_json())
    r = run("sector", "detect", str(tmp_path / "ds"), "--out", str(tmp_path / "sec"),
            "--layouts", str(tmp_path / "layouts.json"))
    assert r.returncode == 0, r.stderr
    geo = json.loads((tmp_path / "sec" / "sectors.json").read_text())
    for case in ("case0", "case1"):  # both images of the layout get the fixed fan
        assert geo[case]["remembered"] and abs(geo[case]["outer_radius"] - 120) < 0.01
    r = run("sector", "detect", str(tmp_path / "ds"), "--out", str(tmp_path / "s2"),
            "--layouts", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in r.stderr and "Traceback" not in r.stderr
