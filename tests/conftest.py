"""Test setup: Qt offscreen, user folders in a temp dir, small helpers that make data in code."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path_factory, monkeypatch):
    """Keep settings, autosaves and projects of every test out of the real home folder."""
    base = tmp_path_factory.mktemp("userdirs")
    monkeypatch.setenv("USGEN_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("USGEN_CONFIG_DIR", str(base / "config"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def lesion_pair(h: int = 96, w: int = 128, seed: int = 0):
    """A speckly grayscale image with a dark ellipse and its 0/255 mask."""
    import cv2

    r = np.random.default_rng(seed)
    img = np.clip(r.rayleigh(60, (h, w)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 6, h // 7), 15, 0, 360, 255, -1)
    img[mask > 0] //= 4
    return img, mask
