"""Full-size realism: the critic on native crops and the octaves can tell the enlarge-only
round trip from real images (so they could show a generator failing), and do not tell two real
samples apart."""

from __future__ import annotations

import numpy as np
import pytest

from usgen_desktop.evaluation.fullsize import (
    critic,
    fullsize_realism,
    native_crops,
    octaves,
    through_resize_path,
)


def speckle_images(n: int, seed: int, shape=(72, 96)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(rng.rayleigh(50, shape) + 40, 0, 255).astype(np.uint8) for _ in range(n)]


def test_crops_come_from_lit_pixels_at_native_size():
    img = np.zeros((100, 200), np.uint8)
    img[:, 120:] = 200  # the left part is the black outside of a fan
    x, owner = native_crops([img, img], size=48, per_image=3, seed=0)
    assert x.shape == (6, 48, 48) and list(owner) == [0, 0, 0, 1, 1, 1]
    assert all((c > -0.9).mean() >= 0.6 for c in x)
    small, _ = native_crops([np.full((20, 30), 100, np.uint8)], size=32, per_image=1)
    assert small.shape == (1, 32, 32)


def test_the_round_trip_is_told_from_real_and_real_from_real_is_not():
    real = speckle_images(16, 0)
    groups = [f"g{i}" for i in range(16)]
    trip = through_resize_path(real, (16, 16))
    told = critic(real, trip, groups, groups, crop=32, per_image=3, folds=4, epochs=4, seed=0)
    assert told["auc"] > 0.9
    other = speckle_images(16, 1)
    same = critic(real, other, groups, [f"h{i}" for i in range(16)], crop=32, per_image=3,
                  folds=4, epochs=4, seed=0)
    assert 0.2 < same["auc"] < 0.8
    o = octaves(real, trip, crop=32)
    assert o["ratio"][-1] < 0.2 and o["ratio"][0] == pytest.approx(1.0, abs=0.5)
    assert octaves(real, other, crop=32)["ratio"][-1] == pytest.approx(1.0, abs=0.1)


def test_per_class_results_and_control():
    real = speckle_images(12, 2)
    syn = speckle_images(12, 3)
    classes = ["benign", "malignant"] * 6
    groups = [f"g{i}" for i in range(12)]
    out = fullsize_realism(real, syn, groups, groups, classes, classes, base_size=(16, 16),
                           crop=32, per_image=2, folds=3, epochs=2)
    assert set(out["per_class"]) == {"benign", "malignant"}
    for d in out["per_class"].values():
        assert {"octaves", "control_octaves", "critic_auc"} <= set(d)
    assert out["control"]["octaves"]["ratio"][-1] < out["octaves"]["ratio"][-1]
