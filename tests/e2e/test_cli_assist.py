"""`usgen assist` and `usgen train assist` on small data made here (a tiny model built in code)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.e2e.helpers import busi_like_dataset, run_usgen
from tests.gui.test_smart_tool import everything_model

torch = pytest.importorskip("torch")


def test_assist_writes_one_mask_per_image_at_its_size(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "a.png"), rng.integers(0, 255, (60, 90), dtype=np.uint8))
    cv2.imwrite(str(images / "b scan.png"), rng.integers(0, 255, (130, 70), dtype=np.uint8))
    cv2.imwrite(str(images / "unused.png"), rng.integers(0, 255, (20, 20), dtype=np.uint8))
    (tmp_path / "points.csv").write_text(
        "image,x,y,inside\na.png,40,30,1\nb scan.png,35,60,1\na.png,5,5,0\n")
    model = everything_model(tmp_path / "model")
    out = tmp_path / "out"
    r = run_usgen("assist", "--images", str(images), "--points", str(tmp_path / "points.csv"),
                  "--out", str(out), "--model", str(model), env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in (out / "masks").iterdir())
    assert written == ["a.png", "b scan.png"]
    a = cv2.imread(str(out / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(out / "masks" / "b scan.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (60, 90) and b.shape == (130, 70) and a.dtype == np.uint8
    assert set(np.unique(a)) <= {0, 255} and (b == 255).all()


@pytest.mark.parametrize("csv_text, words", [
    ("image,x,inside\na.png,1,1\n", "lacks the column(s) y"),
    ("image,x,y,inside\na.png,1,1,yes\n", "inside must be 1 or 0"),
    ("image,x,y,inside\nmissing.png,1,1,1\n", "'missing.png' is not in"),
    ("image,x,y,inside\na.png,one,1,1\n", "x and y must be numbers"),
])
def test_a_bad_points_file_is_one_sentence_and_exit_2(tmp_path, csv_text, words):
    images = tmp_path / "imgs"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((20, 20), np.uint8))
    (tmp_path / "p.csv").write_text(csv_text)
    r = run_usgen("assist", "--images", str(images), "--points", str(tmp_path / "p.csv"),
                  "--out", str(tmp_path / "out"), "--model", str(tmp_path / "none"),
                  env_dir=tmp_path)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists(), "nothing written before the file was checked"


def test_train_assist_fine_tunes_and_resumes(tmp_path):
    from usgen_desktop.assist.model import load_model

    busi_like_dataset(tmp_path / "data")
    init = everything_model(tmp_path / "init")
    out = tmp_path / "run"
    r = run_usgen("train", "assist", "--data", str(tmp_path / "data"), "--out", str(out),
                  "--init-from", str(init), "--steps", "4", "--batch", "2", "-q",
                  env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Trained 4 steps on 4 object(s)" in r.stdout
    assert load_model(out).config.size == 32
    r = run_usgen("train", "assist", "--data", str(tmp_path / "data"), "--out", str(out),
                  "--resume", "-q", env_dir=tmp_path)
    assert r.returncode == 0 and "Trained 4 steps" in r.stdout, r.stderr
    r = run_usgen("train", "assist", "--data", str(tmp_path / "data"),
                  "--out", str(tmp_path / "other"), "--resume", env_dir=tmp_path)
    assert r.returncode == 2 and "holds no run to resume" in r.stderr
