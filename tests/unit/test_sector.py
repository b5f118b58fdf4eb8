"""Sector detection on synthetic fans and rectangles with known geometry, and its editing.

Tolerances: apex within 3 px (or 3 % of its distance above the image: a far apex is
extrapolated from the side edges; 4 px for a fan cut by a display crop, whose visible sides are
shorter), side angles within 1.5 deg, inner radius within 3 px, and the
rasterised fit overlapping the true field of view with IoU > 0.95.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from usgen_desktop.core.labels import LabelMap
from usgen_desktop.core.sector import Sector, apply_sector, detect_sector


def scan(sector: Sector, shape=(240, 320), seed=0, ui=True) -> np.ndarray:
    """An ultrasound-like picture: speckle inside the fan, text and calipers outside."""
    rng = np.random.default_rng(seed)
    m = sector.rasterize(shape)
    img = np.clip(rng.rayleigh(55, shape) + 20, 0, 255) * m
    img = img.astype(np.uint8)
    # a dark cyst inside the fan must not punch a hole in the field of view
    cv2.circle(img, (shape[1] // 2, shape[0] // 2), 20, 0, -1)
    if ui:
        cv2.putText(img, "GAIN 45  7.5MHz", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
        cv2.line(img, (shape[1] - 4, 10), (shape[1] - 4, 80), 255, 1)  # depth scale bar
        cv2.drawMarker(img, (8, shape[0] - 20), 255, cv2.MARKER_CROSS, 7, 1)  # caliper mark
    return img


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


@pytest.mark.parametrize(
    "truth",
    [
        Sector.fan((160, -60), 90, 230, -30, 30),
        Sector.fan((150, -120), 140, 340, -25, 20),
        Sector.fan((160, 10), 0, 220, -38, 38, kind="phased"),
    ],
)
def test_fan_geometry_recovered(truth):
    fit = detect_sector(scan(truth))
    s = fit.sector
    assert s.kind == truth.kind
    tol = max(3.0, 0.03 * abs(truth.apex_y))
    assert abs(s.apex_x - truth.apex_x) < tol and abs(s.apex_y - truth.apex_y) < tol
    assert abs(s.start_angle - truth.start_angle) < 1.5
    assert abs(s.end_angle - truth.end_angle) < 1.5
    if truth.kind == "curvilinear":
        assert abs(s.inner_radius - truth.inner_radius) < 3
    assert iou(fit.mask, truth.rasterize((240, 320))) > 0.95
    assert fit.confidence > 0.9


def test_text_and_calipers_outside_the_fan_are_not_swallowed():
    truth = Sector.fan((160, -60), 90, 230, -30, 30)
    img = scan(truth)
    fit = detect_sector(img)
    assert not fit.mask[0:14, 0:60].any()  # the text box top-left
    assert not fit.mask[10:80, 312:].any()  # the scale bar


def test_linear_rectangle():
    truth = Sector.rectangle(30, 12, 290, 225)
    fit = detect_sector(scan(truth, ui=False))
    assert fit.kind == "linear"
    s = fit.sector
    for a, b in ((s.x0, 30), (s.y0, 12), (s.x1, 290), (s.y1, 225)):
        assert abs(a - b) <= 3
    assert iou(fit.mask, truth.rasterize((240, 320))) > 0.95


def test_handles_move_the_geometry():
    s = Sector.fan((100, -20), 50, 200, -30, 30)
    assert set(s.handles()) == {"apex", "inner", "outer", "start", "end"}
    hx, hy = s.handles()["outer"]
    s2 = s.with_handle_moved("outer", hx, hy + 20)
    assert s2.outer_radius == pytest.approx(220, abs=0.5)
    s3 = s.with_handle_moved("apex", 110, -10)
    assert (s3.apex_x, s3.apex_y) == (110, -10)
    r = Sector.rectangle(10, 10, 50, 60).with_handle_moved("bottom_right", 70, 80)
    assert (r.x1, r.y1) == (70, 80)
    assert Sector.from_dict(s.to_dict()).rasterize((64, 64)).sum() == s.rasterize((64, 64)).sum()


def test_apply_sector_clips_anatomy_and_fills_the_fan():
    sector = Sector.fan((32, -10), 10, 60, -30, 30)
    fov = sector.rasterize((64, 64))
    data = np.zeros((64, 64), np.uint8)
    data[20:64, 0:64] = 1  # anatomy spilling outside the fan
    out = apply_sector(LabelMap(data), fov, sector_id=2).data
    assert (out[~fov] == 0).all()
    assert set(np.unique(out[fov])) <= {1, 2}
    assert (out[fov & (data == 0)] == 2).all()


def test_default_sector_for_an_empty_canvas_is_inside():
    for kind in ("linear", "curvilinear", "phased"):
        m = Sector.default_for(kind, 200, 300).rasterize((200, 300))
        assert 0.3 < m.mean() < 0.98


@pytest.mark.parametrize(
    "truth",
    [
        # zoomed and panned: the right side of the fan is cut by the display, only the left
        # side and the inner arc tell where the apex is
        Sector.fan((100, -150), 160, 400, -30, 30).with_crop(0, 0, 250, 239),
        # both sides visible, a vertical display edge on the right
        Sector.fan((160, -80), 90, 330, -30, 30).with_crop(0, 0, 250, 239),
    ],
)
def test_fan_seen_through_a_display_crop(truth):
    fit = detect_sector(scan(truth))
    s = fit.sector
    assert s.kind == "curvilinear"
    tol = max(4.0, 0.03 * abs(truth.apex_y))  # shorter visible sides: 4 px, not 3
    assert abs(s.apex_x - truth.apex_x) < tol and abs(s.apex_y - truth.apex_y) < tol
    # 2 deg: in the first case only 22 px of the left side are in view, beside the text
    assert abs(s.start_angle - truth.start_angle) < 2.0
    assert abs(s.inner_radius - truth.inner_radius) < 3
    assert iou(fit.mask, truth.rasterize((240, 320))) > 0.95
    assert not fit.mask[10:80, 312:].any()  # the scale bar right of the crop


def test_crop_survives_dict_round_trip_and_clips_the_outline():
    s = Sector.fan((100, -150), 160, 400, -30, 30).with_crop(0, 0, 250, 239)
    assert s.has_crop and not Sector.fan((1, 1), 0, 5, -5, 5).has_crop
    back = Sector.from_dict(s.to_dict())
    assert np.array_equal(back.rasterize((240, 320)), s.rasterize((240, 320)))
    pts = s.outline(64)
    assert pts[:, 0].max() <= 250 + 1e-6 and pts[:, 1].max() <= 239 + 1e-6


def test_cropped_fan_has_crop_handles_and_side_handles_in_view():
    s = Sector.fan((160, -400), 400, 700, -20, 20).with_crop(0, 0, 319, 239)
    hs = s.handles()
    assert {"crop_left", "crop_right", "crop_top", "crop_bottom"} <= set(hs)
    for name in ("start", "end"):
        x, y = hs[name]
        assert 0 <= x <= 319 and 0 <= y <= 239  # on the visible part of the side
    s2 = s.with_handle_moved("crop_right", 250, 100)
    assert s2.x1 == 250 and s2.rasterize((240, 320))[:, 251:].sum() == 0
    s3 = s.with_handle_moved("start", *s._polar(500, -25))
    assert abs(s3.start_angle - -25) < 1e-6


def test_filled_annotation_boxes_touching_or_near_the_fan_are_not_swallowed():
    truth = Sector.fan((160, -60), 90, 230, -30, 30)
    img = scan(truth)
    cv2.rectangle(img, (5, 100), (70, 118), 230, -1)  # a label box touching the fan's side
    cv2.putText(img, "HEAD", (10, 114), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
    cv2.rectangle(img, (270, 20), (315, 40), 200, -1)  # a separate bright box
    assert truth.rasterize((240, 320))[100:119, 5:71].any()  # it does touch
    fit = detect_sector(img)
    assert fit.kind == "curvilinear"
    assert fit.mask[100:119, 5:60].sum() < 0.03 * 55 * 19
    assert not fit.mask[20:41, 270:316].any()
    assert iou(fit.mask, truth.rasterize((240, 320))) > 0.93


def test_probe_prior():
    truth = Sector.fan((160, -60), 90, 230, -30, 30)
    img = scan(truth)
    assert detect_sector(img, probe="linear").kind == "linear"
    assert detect_sector(img, probe="curvilinear").kind == "curvilinear"
    rect = scan(Sector.rectangle(30, 12, 290, 225), ui=False)
    # no fan edge in view at all: a fan probe's scan is then a fan seen through a display
    # crop, the rectangle (same pixels, the probe's kind)
    fit = detect_sector(rect, probe="curvilinear")
    assert fit.kind == "curvilinear" and fit.sector.has_crop
    assert iou(fit.sector.rasterize(rect.shape), fit.mask) > 0.999
    assert iou(fit.mask, Sector.rectangle(30, 12, 290, 225).rasterize(rect.shape)) > 0.97
    assert detect_sector(rect).kind == "linear"
