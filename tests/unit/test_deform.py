"""Label-map deformation: ids stay ids, the sector stays fixed, seeds reproduce."""

from __future__ import annotations

import cv2
import numpy as np

from usgen_desktop.core.deform import (
    DeformParams,
    WarpStroke,
    check_variant,
    deform_label_map,
    make_variants,
    transform_label,
    warp_drag,
)
from usgen_desktop.core.labels import LabelMap
from usgen_desktop.core.sector import Sector


def echo_like(size=128) -> LabelMap:
    fov = Sector.fan((size / 2, -size * 0.1), size * 0.2, size * 1.0, -35, 35).rasterize(
        (size, size)
    )
    d = np.where(fov, 2, 0).astype(np.uint8)
    c = size // 2
    cv2.ellipse(d, (c, c), (size // 5, size // 4), 0, 0, 360, 3, -1)  # myocardium
    cv2.ellipse(d, (c, c), (size // 8, size // 6), 0, 0, 360, 1, -1)  # cavity
    d[~fov] = 0
    return LabelMap(d)


def test_ids_stay_ids_and_sector_stays_fixed():
    lm = echo_like()
    for seed in range(5):
        v = deform_label_map(lm, DeformParams(), seed, sector_id=2)
        assert set(v.ids()) <= set(lm.ids())
        assert np.array_equal(v.data != 0, lm.data != 0)  # field of view unchanged


def test_seeds_reproduce_and_differ():
    lm = echo_like()
    a = deform_label_map(lm, DeformParams(), 7, sector_id=2)
    b = deform_label_map(lm, DeformParams(), 7, sector_id=2)
    c = deform_label_map(lm, DeformParams(), 8, sector_id=2)
    assert a == b
    assert a != c
    assert a != lm


def test_identity_parameters_give_the_input_back():
    lm = echo_like()
    assert deform_label_map(lm, DeformParams.identity(), 3, sector_id=2) == lm
    zero = DeformParams(rotation_deg=0, translate_frac=0, scale=(1, 1), shear_deg=0,
                        max_disp_px=0)
    assert deform_label_map(lm, zero, 3, sector_id=2) == lm


def test_without_keep_sector_the_fan_moves_too():
    lm = echo_like()
    v = deform_label_map(lm, DeformParams(keep_sector=False), 1, sector_id=2)
    assert not np.array_equal(v.data != 0, lm.data != 0)


def test_check_variant_reports_vanished_and_split_labels():
    src = np.zeros((40, 40), np.uint8)
    src[5:15, 5:15] = 1
    src[25:35, 25:35] = 3
    gone = src.copy()
    gone[gone == 3] = 0
    split = src.copy()
    split[9:11, 5:15] = 0
    assert check_variant(LabelMap(src), LabelMap(gone)) == ["label 3 vanished"]
    assert any("split" in p for p in check_variant(LabelMap(src), LabelMap(split)))
    assert check_variant(LabelMap(src), LabelMap(src)) == []


def test_make_variants_skips_bad_ones_and_is_reproducible():
    lm = echo_like()
    a = make_variants(lm, 3, DeformParams(), seed=1, sector_id=2, source="x")
    b = make_variants(lm, 3, DeformParams(), seed=1, sector_id=2, source="x")
    assert [v.label_map for v in a] == [v.label_map for v in b]
    assert all(not v.problems for v in a)
    assert len({v.seed for v in a}) == 3


def test_warp_drag_moves_the_label_toward_the_drag():
    d = np.zeros((100, 100), np.uint8)
    d[40:60, 40:60] = 1
    box, new = warp_drag(d, (50, 50), (62, 50), radius=25)
    out = d.copy()
    y0, y1, x0, x1 = box
    out[y0:y1, x0:x1] = new
    cx_before = np.nonzero(d == 1)[1].mean()
    cx_after = np.nonzero(out == 1)[1].mean()
    assert cx_after > cx_before + 4
    assert set(np.unique(out)) <= {0, 1}
    assert warp_drag(d, (50, 50), (50, 50), 10) is None


def test_transform_label_moves_and_scales_one_label():
    d = np.zeros((100, 100), np.uint8)
    d[40:60, 40:60] = 1
    d[0:10, 0:10] = 2
    box, new = transform_label(d, 1, dx=20, dy=0, scale=1.5)
    out = d.copy()
    y0, y1, x0, x1 = box
    out[y0:y1, x0:x1] = new
    ys, xs = np.nonzero(out == 1)
    assert abs(xs.mean() - 69.5) < 2
    assert (out == 1).sum() > 1.8 * 400
    assert (out[0:10, 0:10] == 2).all()  # other labels untouched


def _apply(a, res):
    if res is not None:
        (y0, y1, x0, x1), v = res
        a[y0:y1, x0:x1] = v


def test_warp_stroke_of_sub_pixel_moves_adds_up():
    """A zoomed-in canvas sends quarter-pixel mouse moves; each alone rounds to nothing."""
    d = np.zeros((100, 100), np.uint8)
    d[40:60, 30:70] = 1
    stroke, many = WarpStroke(d, 25), d.copy()
    for k in range(48):
        _apply(many, stroke.drag((50 + k / 4, 50), (50 + (k + 1) / 4, 50)))
    one = d.copy()
    _apply(one, WarpStroke(d, 25).drag((50, 50), (62, 50)))
    assert (many != d).sum() > 50  # it moved
    assert (many != one).sum() < 0.05 * (d == 1).sum()  # about as far as one long drag
    assert np.nonzero(many == 1)[1].max() > 70


def test_warp_keeps_the_sector_and_stays_inside_the_radius():
    lm = echo_like()
    d = lm.data
    box, new = warp_drag(d, (64, 64), (72, 60), radius=20, sector_id=2)
    out = d.copy()
    _apply(out, (box, new))
    assert np.array_equal(out != 0, d != 0)  # field of view unchanged
    ys, xs = np.nonzero(out != d)
    assert np.hypot(xs - 72, ys - 60).max() <= 20 + 1e-6


def test_transform_label_is_clipped_to_the_fan():
    lm = echo_like()
    d = lm.data
    box, new = transform_label(d, 1, dx=-50, dy=-50, fill_id=2)  # into a corner outside
    out = d.copy()
    _apply(out, (box, new))
    assert np.array_equal(out != 0, d != 0)
    assert not (out[d == 0] == 1).any()


def test_drop_bad_leaves_out_variants_that_stay_bad():
    d = np.zeros((64, 64), np.uint8)
    d[1:4, 1:4] = 1  # in a corner that a 4x zoom always pushes out of view
    d[28:36, 28:36] = 3
    zoom = DeformParams(rotation_deg=0, translate_frac=0, scale=(4, 4), shear_deg=0,
                        elastic=False)
    kept = make_variants(LabelMap(d), 2, zoom, seed=0, max_tries=3)
    assert len(kept) == 2 and all("label 1 vanished" in v.problems for v in kept)
    assert make_variants(LabelMap(d), 2, zoom, seed=0, max_tries=3, drop_bad=True) == []


def test_elastic_field_is_smooth_enough_not_to_split_a_head():
    """A B-spline field with the reference's 30 px at 256 px rarely folds: an ellipse the size
    of a fetal head stays one piece (interpolating the control values split a third)."""
    fov = Sector.fan((128, -60), 70, 330, -32, 32).rasterize((256, 256))
    d = np.where(fov, 2, 0).astype(np.uint8)
    cv2.ellipse(d, (128, 140), (60, 48), 20, 0, 360, 1, -1)
    lm = LabelMap(d)
    bad = [s for s in range(20)
           if check_variant(lm, deform_label_map(lm, DeformParams(), s, 2), ignore=(0, 2))]
    assert len(bad) <= 1
    moved = [(deform_label_map(lm, DeformParams(), s, 2).data != d).mean() for s in range(3)]
    assert min(moved) > 0.01  # and it still deforms visibly


def test_bad_parameters_are_one_sentence_errors():
    import pytest

    from usgen_desktop.errors import UsgenError

    DeformParams().validate()
    for bad in (DeformParams(scale=(1.1, 0.9)), DeformParams(scale=(0, 1)),
                DeformParams(max_disp_px=-1), DeformParams(grid=(3, 10)),
                DeformParams(translate_frac=2)):
        with pytest.raises(UsgenError):
            bad.validate()


def test_warp_stroke_keeps_its_field_local_and_takes_numpy_points():
    big = np.zeros((2048, 2048), np.uint8)
    big[1000:1040, 1000:1040] = 1
    stroke = WarpStroke(big, 30)
    res = stroke.drag((np.float64(1020.0), np.float64(1020.0)), (np.float64(1030.0), 1021.0))
    assert res is not None
    y0, y1, x0, x1 = stroke._box
    assert (y1 - y0) * (x1 - x0) < 100 * 100  # not a full-size field
