"""Shared by the end-to-end tests: run `usgen` in a subprocess, make a small BUSI-like folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2

from tests.conftest import lesion_pair

REPO = Path(__file__).resolve().parents[2]


def run_usgen(*args: str, env_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m usgen_desktop.cli.main ARGS` from the repo, with data/config dirs under env_dir."""
    env = {**os.environ, "USGEN_DATA_DIR": str(env_dir / "data"),
           "USGEN_CONFIG_DIR": str(env_dir / "cfg"), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "usgen_desktop.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )


def busi_like_dataset(root: Path) -> None:
    """The BUSI download's layout: benign/ and malignant/ with two image/_mask pairs each."""
    for klass in ("benign", "malignant"):
        for i in range(2):
            img, mask = lesion_pair(48, 64, seed=i)
            (root / klass / "images").mkdir(parents=True, exist_ok=True)
            (root / klass / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / klass / "images" / f"{klass} ({i}).png"), img)
            cv2.imwrite(str(root / klass / "masks" / f"{klass} ({i})_mask.png"), mask)
