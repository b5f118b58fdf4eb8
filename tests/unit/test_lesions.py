"""Lesion proposals: learned from masks, deterministic per seed, inside the tissue or fan and
the image, and shaped by class (malignant less solid, rougher, taller for its width)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from usgen_desktop.core.labels import load_preset
from usgen_desktop.core.lesions import (
    LesionModel,
    allowed_region,
    fit_lesion_model,
    lesion_label,
    lesion_model_for,
    shape_stats,
    shipped_lesion_model,
    tissue_mask,
)
from usgen_desktop.errors import UsgenError


def _oval(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    a, b = int(rng.integers(14, 22)), int(rng.integers(7, 11))
    cv2.ellipse(m, (w // 2 + int(rng.integers(-10, 10)), h // 2), (a, b),
                float(rng.normal(0, 5)), 0, 360, 1, -1)
    return m


def _spiky(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    n = 40
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 14 + 8 * (np.arange(n) % 2) * rng.uniform(0.5, 1.0, n)
    pts = np.stack([w / 2 + r * 0.8 * np.cos(t), h / 2 + r * 1.2 * np.sin(t)], 1)
    cv2.fillPoly(m, [np.rint(pts).astype(np.int32)], 1)
    return m


@pytest.fixture(scope="module")
def made_up_model() -> LesionModel:
    rng = np.random.default_rng(0)
    items = [(_oval(96, 128, rng), "benign") for _ in range(12)]
    items += [(_spiky(96, 128, rng), "malignant") for _ in range(12)]
    return fit_lesion_model(items, source="test")


def test_fitted_classes_differ_the_way_the_masks_do(made_up_model):
    b = made_up_model.classes["benign"].stats
    m = made_up_model.classes["malignant"].stats
    assert m["solidity"]["median"] < b["solidity"]["median"]
    assert m["roughness"]["median"] > b["roughness"]["median"]
    assert m["aspect"]["median"] > 1.0 > b["aspect"]["median"]


def _median_stats(model: LesionModel, klass: str, n: int = 24) -> dict[str, float]:
    st = [shape_stats(model.propose((128, 160), klass, seed=s).mask) for s in range(n)]
    return {k: float(np.median([x[k] for x in st])) for k in st[0]}


def test_proposals_follow_their_class(made_up_model):
    b = _median_stats(made_up_model, "benign")
    m = _median_stats(made_up_model, "malignant")
    assert m["solidity"] < b["solidity"]
    assert m["roughness"] > b["roughness"]
    assert m["aspect"] > 1.0 > b["aspect"]


def test_shipped_busi_statistics_read_like_bi_rads():
    model = shipped_lesion_model("busi")
    assert model is not None and {"benign", "malignant"} <= set(model.classes)
    b = _median_stats(model, "benign", 30)
    m = _median_stats(model, "malignant", 30)
    # benign: oval, smooth, wider than tall; malignant: less solid, rougher, less wide
    assert b["aspect"] < 1.0 and b["solidity"] > 0.95
    assert m["solidity"] < b["solidity"] and m["roughness"] > b["roughness"]
    assert m["aspect"] > b["aspect"]


def test_same_seed_same_lesion_other_seed_other_lesion(made_up_model):
    a = made_up_model.propose((100, 120), "malignant", seed=7, center=(60, 50))
    b = made_up_model.propose((100, 120), "malignant", seed=7, center=(60, 50))
    c = made_up_model.propose((100, 120), "malignant", seed=8, center=(60, 50))
    assert np.array_equal(a.mask, b.mask) and a.mask.any()
    assert not np.array_equal(a.mask, c.mask)


def test_proposal_is_placed_at_the_click_with_the_asked_size(made_up_model):
    p = made_up_model.propose((200, 200), "benign", seed=1, center=(70, 120), area_fraction=0.02)
    ys, xs = np.nonzero(p.mask)
    assert abs(xs.mean() - 70) < 4 and abs(ys.mean() - 120) < 4
    assert 0.015 < p.mask.mean() < 0.025
    x0, y0, x1, y1 = p.bbox
    assert p.region()["bbox"] == [x0, y0, x1, y1] and p.region()["area_px"] == p.mask.sum()


def test_a_click_at_the_border_moves_the_lesion_inside_the_image(made_up_model):
    for seed in range(6):
        p = made_up_model.propose((80, 100), "malignant", seed=seed, center=(0, 79),
                                  area_fraction=0.05)
        assert p.mask.any()
        assert not p.mask[:2].any() and not p.mask[-2:].any()
        assert not p.mask[:, :2].any() and not p.mask[:, -2:].any()
        x0, _, _, y1 = p.bbox  # moved only as far as it must: into the corner it was asked at
        assert x0 <= 3 and y1 >= 80 - 3


def test_proposal_stays_inside_the_fan_and_off_other_labels(made_up_model):
    h, w = 120, 160
    labels = np.zeros((h, w), np.uint8)
    cv2.ellipse(labels, (80, 0), (110, 110), 0, 45, 135, 2, -1)  # a fan, sector id 2
    cv2.circle(labels, (80, 60), 12, 1, -1)  # a structure already labelled
    region = allowed_region(labels, sector_id=2)
    for seed in range(8):
        p = made_up_model.propose((h, w), "benign", seed=seed, center=(80, 60),
                                  area_fraction=0.03, allowed=region)
        assert p.mask.any()
        assert np.all(labels[p.mask] == 2)  # inside the fan, never over the circle


def test_tissue_excludes_the_black_frame():
    img = np.zeros((100, 140), np.uint8)
    rng = np.random.default_rng(0)
    img[10:90, 20:120] = rng.integers(60, 200, (80, 100))
    img[40:55, 60:80] = 5  # a dark cyst inside the tissue is still tissue
    t = tissue_mask(img)
    assert t[50, 70] and t[30, 40]
    assert not t[:8].any() and not t[:, :18].any() and not t[:, 122:].any()
    region = allowed_region(np.zeros_like(img), image=img)
    rng_model = fit_lesion_model([(_oval(100, 140, rng), "benign") for _ in range(5)])
    p = rng_model.propose(img.shape, "benign", seed=3, center=(5, 5), allowed=region)
    assert np.all(t[p.mask])


def test_no_room_is_one_sentence(made_up_model):
    region = np.zeros((60, 60), bool)
    region[20:24, 20:24] = True
    with pytest.raises(UsgenError, match="no room"):
        made_up_model.propose((60, 60), "benign", seed=0, allowed=region, area_fraction=0.2)
    with pytest.raises(UsgenError, match="class 'cystic'"):
        made_up_model.propose((60, 60), "cystic", seed=0)


def test_model_round_trips_through_json(made_up_model):
    again = LesionModel.from_json(made_up_model.to_json())
    a = made_up_model.propose((90, 90), "benign", seed=4)
    b = again.propose((90, 90), "benign", seed=4)
    assert np.array_equal(a.mask, b.mask)
    with pytest.raises(UsgenError, match="not a lesion shape model"):
        LesionModel.from_json('{"format": "other"}')


def test_project_masks_win_over_shipped_statistics_when_there_are_enough():
    schema = load_preset("busi")
    rng = np.random.default_rng(1)
    items = [(_spiky(96, 128, rng), "malignant") for _ in range(12)]
    own = lesion_model_for(schema, items, "malignant")
    assert own.source == "this project's masks"
    few = lesion_model_for(schema, items[:2], "malignant")
    assert "BUSI" in few.source
    assert lesion_label(schema) == 1
