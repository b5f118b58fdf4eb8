"""Screen overlays (black anonymisation boxes inside the fan) are found, dark anatomy is not,
and a training run leaves marked pixels out of its loss."""

from __future__ import annotations

import numpy as np

from usgen_desktop.core.overlays import IGNORE_BIT, fill_overlays, screen_overlays


def _fan_image(seed: int = 0):
    import cv2

    rng = np.random.default_rng(seed)
    h, w = 216, 320
    img = np.clip(rng.rayleigh(45, (h, w)), 0, 255).astype(np.uint8)
    region = np.zeros((h, w), np.uint8)
    cv2.ellipse(region, (w // 2, -40), (250, 250), 0, 55, 125, 1, -1)
    img[region == 0] = 0
    # dark fluid: very dark and noisy, irregular
    fluid = np.zeros((h, w), np.uint8)
    cv2.ellipse(fluid, (120, 120), (40, 22), 30, 0, 360, 1, -1)
    img[fluid > 0] = np.clip(rng.rayleigh(2, int(fluid.sum())), 0, 255).astype(np.uint8)
    return img, region > 0, fluid > 0


def test_a_black_box_inside_the_fan_is_found_and_fluid_is_not():
    img, region, fluid = _fan_image()
    box = np.zeros_like(region)
    box[170:200, 200:250] = True
    img[box] = 0
    found = screen_overlays(img, region)
    assert found[box & region].mean() > 0.95
    assert found[fluid].mean() < 0.05
    assert not found[~region].any() or found[~region].sum() < 0.02 * (~region).sum()
    filled = fill_overlays(img, found)
    assert filled[175:195, 210:240].mean() > 10  # the box is filled from around it
    assert np.array_equal(filled[~found], img[~found])


def test_no_box_no_mask():
    img, region, _ = _fan_image(1)
    assert not screen_overlays(img, region).any()


def test_training_strips_the_ignore_bit(tmp_path):
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.synthesis.training.sdm import TrainConfig, train_sdm

    rng = np.random.default_rng(0)
    triples = []
    for _ in range(4):
        img = rng.integers(0, 255, (32, 32)).astype(np.uint8)
        lab = np.zeros((32, 32), np.uint8)
        lab[8:20, 8:20] = 1
        lab[24:, 24:] |= IGNORE_BIT
        triples.append((img, lab, None))
    cfg = TrainConfig(size=32, steps=3, batch=2, sample_every=0, checkpoint_every=0,
                      block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=4,
                      device="cpu")
    res = train_sdm(triples, tmp_path / "m", cfg, schema=load_preset("busi"), classes=[])
    assert res.step == 3 and all(np.isfinite(res.losses))
