"""`usgen export` end to end: a dataset and a project made in temp folders, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import lesion_pair
from tests.e2e.helpers import REPO, busi_like_dataset, run_usgen


def _usgen(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    return run_usgen("export", *args, env_dir=env_dir)


def _dataset(root: Path) -> None:
    busi_like_dataset(root)
    (root / "benign" / "images" / "broken.png").write_bytes(b"not a png")


def test_export_dataset_to_nnunet(tmp_path):
    _dataset(tmp_path / "busi")
    r = _usgen("--from", str(tmp_path / "busi"), "--format", "nnunet", "--out",
               str(tmp_path / "raw"), "--name", "Breast", env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    ds = tmp_path / "raw" / "Dataset500_Breast"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["numTraining"] == 4 and meta["labels"] == {"background": 0, "lesion": 1}
    assert "broken.png" in r.stderr  # one line for the bad file; the rest was exported
    problem_lines = [ln for ln in r.stderr.splitlines() if "broken.png" in ln]
    assert len(problem_lines) == 1 and "Traceback" not in r.stderr
    assert "Exported 4 pairs" in r.stdout
    labels = cv2.imread(str(next((ds / "labelsTr").iterdir())), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(labels)) == {0, 1}

    again = _usgen("--from", str(tmp_path / "busi"), "--format", "nnunet", "--out",
                   str(tmp_path / "raw"), "--name", "Breast", env_dir=tmp_path)
    assert again.returncode == 2
    err = [ln for ln in again.stderr.splitlines() if ln.startswith("usgen: error:")]
    assert len(err) == 1 and "not empty" in err[0] and "Traceback" not in again.stderr
    ok = _usgen("--from", str(tmp_path / "busi"), "--format", "nnunet", "--out",
                str(tmp_path / "raw"), "--name", "Breast", "--overwrite", env_dir=tmp_path)
    assert ok.returncode == 0


def test_export_project_to_folder(tmp_path):
    sys.path.insert(0, str(REPO))
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.io import Project

    img, mask = lesion_pair(40, 50, seed=3)
    project = Project.create(tmp_path / "proj", load_preset("busi"), name="Study")
    doc = Document(labels=LabelMap((mask > 0).astype(np.uint8)), schema=project.schema,
                   image=UltrasoundImage(img), name="case one", tags={"class": "benign"})
    project.add([doc])
    project.save()
    r = _usgen("--from", str(tmp_path / "proj"), "--format", "folder", "--out",
               str(tmp_path / "out"), env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    assert rec["name"] == "case one" and rec["class"] == "benign"
    out_mask = cv2.imread(str(tmp_path / "out" / rec["label"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(out_mask, doc.labels.data)


def test_user_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("file")
    img, _ = lesion_pair(30, 30)
    (tmp_path / "one").mkdir()
    cv2.imwrite(str(tmp_path / "one" / "a.png"), img)
    cases = [
        ("--from", str(tmp_path / "missing"), "--out", str(tmp_path / "o1")),
        ("--from", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")),
        ("--from", str(tmp_path / "one"), "--out", str(blocker / "sub")),
    ]
    for args in cases:
        r = _usgen(*args, env_dir=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("usgen: error:")]
        assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
