"""A test set of drawn scanner screens with a known field of view (made in code, never stored).

Each case is a fan (curvilinear, phased) or a rectangle (linear) filled with depth-attenuated
speckle and a dark cyst, with the clutter real screens carry: depth and TGC bars, grey and
colour scales, text, measurement calipers, a logo, black anonymisation boxes over part of the
fan, fans cut by the image border or cropped, and a low-contrast far field. The truth is the
drawn geometry clipped to the image (an anonymisation box hides part of the fan, it does not
change where the fan is).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from usgen_desktop.core.sector import Sector

SIZES = ((216, 320), (300, 400), (480, 640), (600, 800), (256, 256), (360, 300))
CLUTTER = ("depth_bar", "tgc", "grey_scale", "colour_scale", "text", "calipers", "logo",
           "box", "far_field", "cut", "crop")


@dataclass
class FanCase:
    name: str
    image: np.ndarray  # RGB uint8 (a colour scale is colour)
    truth: np.ndarray  # bool
    sector: Sector
    clutter: tuple[str, ...]


def _geometry(kind: str, h: int, w: int, rng: np.random.Generator, cut: bool) -> Sector:
    if kind == "linear":
        x0 = rng.uniform(0.12, 0.2) * w
        x1 = w - rng.uniform(0.12, 0.2) * w
        y0 = rng.uniform(0.05, 0.1) * h
        y1 = h - 1 if cut else h - rng.uniform(0.04, 0.1) * h
        return Sector.rectangle(x0, y0, x1, y1)
    if kind == "phased":
        half = rng.uniform(30, 44)
        r = (1.15 if cut else rng.uniform(0.8, 0.9)) * h
        return Sector.fan((w / 2 + rng.uniform(-0.04, 0.04) * w, rng.uniform(0.03, 0.08) * h),
                          0.0, r, -half, half, "phased")
    half = rng.uniform(24, 36)
    apex_y = -rng.uniform(0.2, 0.6) * h
    r_in = -apex_y + rng.uniform(0.05, 0.12) * h
    r_out = (-apex_y + (1.25 if cut else rng.uniform(0.8, 0.9)) * h)
    # the fan must fit the width unless it is cut by the border on purpose
    side = (r_out * np.sin(np.radians(half)))
    if not cut and side > 0.42 * w:
        half = float(np.degrees(np.arcsin(min(0.99, 0.42 * w / r_out))))
    if cut:
        half = max(half, float(np.degrees(np.arcsin(min(0.99, 0.62 * w / r_out)))))
    return Sector.fan((w / 2 + rng.uniform(-0.03, 0.03) * w, apex_y), r_in, r_out, -half, half)


def _speckle(sector: Sector, shape: tuple[int, int], rng: np.random.Generator,
             far_field: bool) -> np.ndarray:
    h, w = shape
    img = rng.rayleigh(1.0, shape) * 55 + 25
    # tissue layers: smooth brightness variation as real scans have
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img *= 0.75 + 0.35 * np.sin(yy / (0.11 * h) + rng.uniform(0, 6)) ** 2
    if far_field:
        depth = (yy - yy.min()) / h
        img *= np.exp(-3.2 * depth)  # the far field fades to a few grey levels
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8)
    cv2.ellipse(img, (int(rng.uniform(0.35, 0.65) * w), int(rng.uniform(0.35, 0.6) * h)),
                (int(0.09 * w), int(0.06 * h)), rng.uniform(0, 180), 0, 360, 3, -1)
    m = sector.rasterize(shape)
    return np.clip(img, 0, 255).astype(np.uint8) * m


def make_case(kind: str, shape: tuple[int, int], clutter: tuple[str, ...], seed: int) -> FanCase:
    """One drawn screen: ``kind`` of probe, image ``shape`` and the named clutter."""
    rng = np.random.default_rng(seed)
    h, w = shape
    cut = "cut" in clutter
    sector = _geometry(kind, h, w, rng, cut)
    gray = _speckle(sector, shape, rng, "far_field" in clutter)
    truth = sector.rasterize(shape)
    if "crop" in clutter:
        # the scanner shows the fan through a zoom window: black outside a rectangle
        ys, xs = np.nonzero(truth)
        x0 = int(xs.min() + rng.uniform(0.08, 0.2) * (xs.max() - xs.min()))
        x1 = int(xs.max() - rng.uniform(0.0, 0.1) * (xs.max() - xs.min()))
        y0, y1 = int(ys.min()), int(ys.max() - rng.uniform(0.0, 0.15) * (ys.max() - ys.min()))
        win = np.zeros(shape, bool)
        win[y0:y1 + 1, x0:x1 + 1] = True
        truth &= win
        gray = gray * win
        sector = sector.with_crop(x0, y0, x1, y1) if sector.is_fan else Sector.rectangle(
            max(sector.x0, x0), max(sector.y0, y0), min(sector.x1, x1), min(sector.y1, y1))
        truth = sector.rasterize(shape)
    rgb = np.repeat(gray[..., None], 3, axis=2).copy()
    ys, xs = np.nonzero(truth)
    left, right, top, bottom = xs.min(), xs.max(), ys.min(), ys.max()
    s = min(h, w) / 300  # clutter scales with the screen
    white = (235, 235, 235)
    if "depth_bar" in clutter:
        # the depth scale: a vertical line with ticks a few pixels beside the fan's edge
        x = int(min(w - 6, right + max(3, 5 * s)))
        cv2.line(rgb, (x, top), (x, bottom), white, max(1, int(s)))
        for y in np.linspace(top, bottom, 8).astype(int):
            cv2.line(rgb, (x, int(y)), (min(w - 1, x + int(6 * s)), int(y)), white, 1)
    if "tgc" in clutter:
        # the time-gain curve: a grey polyline with dots, just left of the fan
        x = int(max(4, left - max(4, 10 * s)))
        pts = np.array([(x - int(4 * s * np.sin(t)), int(top + (bottom - top) * t / 6))
                        for t in range(7)], np.int32)
        cv2.polylines(rgb, [pts], False, (150, 150, 150), max(1, int(2 * s)))
        for p in pts:
            cv2.circle(rgb, tuple(int(v) for v in p), max(2, int(3 * s)), (200, 200, 200), -1)
    if "grey_scale" in clutter:
        # the grey-scale bar: a smooth gradient strip 2-4 px from the fan (the IoU 0.78 case)
        x0 = int(min(w - 12 * s - 2, right + rng.uniform(2, 4)))
        y0, y1 = int(top + 0.1 * (bottom - top)), int(top + 0.55 * (bottom - top))
        grad = np.linspace(250, 30, max(1, y1 - y0))[:, None]
        rgb[y0:y1, x0:int(x0 + 10 * s) + 1] = grad[..., None].astype(np.uint8)
    if "colour_scale" in clutter:
        x0 = int(max(1, left - 14 * s - rng.uniform(2, 5)))
        y0, y1 = int(top + 0.15 * (bottom - top)), int(top + 0.5 * (bottom - top))
        n = max(1, y1 - y0)
        hue = np.linspace(0, 120, n).astype(np.uint8)
        hsv = np.stack([hue, np.full(n, 255, np.uint8), np.full(n, 255, np.uint8)], 1)
        col = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
        rgb[y0:y1, x0:int(x0 + 9 * s) + 1] = col[:, None, :]
    if "text" in clutter:
        fs = 0.4 * s
        cv2.putText(rgb, "C5-1  3.5MHz  Gn 52  DR 60", (3, int(12 * s) + 2),
                    cv2.FONT_HERSHEY_SIMPLEX, fs, white, 1)
        cv2.putText(rgb, "12.0 cm", (3, h - 6), cv2.FONT_HERSHEY_SIMPLEX, fs, white, 1)
        cv2.putText(rgb, "HEAD", (int(left + 0.3 * (right - left)), int(top + 0.3 * (bottom -
                    top))), cv2.FONT_HERSHEY_SIMPLEX, fs * 1.2, white, 1)
    if "calipers" in clutter:
        a = (int(left + 0.3 * (right - left)), int(top + 0.6 * (bottom - top)))
        b = (int(left + 0.7 * (right - left)), int(top + 0.65 * (bottom - top)))
        for p in (a, b):
            cv2.drawMarker(rgb, p, (255, 255, 0), cv2.MARKER_CROSS, int(10 * s), 1)
        for t in np.linspace(0, 1, 14):
            p = (int(a[0] + t * (b[0] - a[0])), int(a[1] + t * (b[1] - a[1])))
            cv2.circle(rgb, p, 1, (255, 255, 0), -1)
        cv2.putText(rgb, "D1 4.2cm", (int(w * 0.62), int(h * 0.08) + 4),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35 * s, white, 1)
    if "logo" in clutter:
        cx, cy, r = int(w - 22 * s), int(h - 22 * s), int(14 * s)
        cv2.circle(rgb, (cx, cy), r, (220, 220, 220), -1)
        cv2.putText(rgb, "GE", (cx - r // 2, cy + r // 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * s,
                    (20, 20, 20), 1)
    if "big_box" in clutter:
        # a box hiding a third of the fan: where the fan ends there is a guess, not a sight
        rgb[int(top + 0.3 * (bottom - top)):, int(left + 0.45 * (right - left)):] = 0
    if "grey_surround" in clutter:
        # a lossy export: the surround is a noisy dark grey, not zero
        bg = np.clip(rng.normal(18, 4, shape), 0, 255).astype(np.uint8)
        rgb[~truth] = np.maximum(rgb[~truth], bg[~truth][:, None])
    if "box" in clutter:
        # anonymisation: a black box over a corner of the fan (HC18 has one bottom right)
        bw, bh = int(rng.uniform(0.12, 0.2) * w), int(rng.uniform(0.12, 0.2) * h)
        x0 = int(min(w - bw, right - 0.6 * bw))
        y0 = int(min(h - bh, bottom - 0.8 * bh))
        rgb[y0:y0 + bh, x0:x0 + bw] = 0
    name = f"{kind}_{w}x{h}_{'+'.join(clutter) or 'plain'}_{seed}"
    return FanCase(name, rgb, truth, sector, clutter)


def fan_cases() -> list[FanCase]:
    """The whole set: every probe kind at several sizes, with each kind of clutter alone and
    with typical combinations."""
    combos: list[tuple[str, ...]] = [
        (), ("depth_bar",), ("tgc",), ("grey_scale",), ("colour_scale",), ("text",),
        ("calipers",), ("logo",), ("box",), ("far_field",), ("cut",), ("crop",),
        ("depth_bar", "tgc", "grey_scale", "text", "calipers"),
        ("colour_scale", "logo", "box", "text"),
        ("far_field", "grey_scale", "depth_bar", "text"),
        ("cut", "box", "text", "depth_bar"),
        ("crop", "calipers", "text", "grey_scale"),
        ("far_field", "cut", "box", "tgc", "logo"),
    ]
    cases = []
    seed = 0
    for kind in ("curvilinear", "phased", "linear"):
        for k, clutter in enumerate(combos):
            for shape in (SIZES[k % len(SIZES)], SIZES[(k + 3) % len(SIZES)]):
                seed += 1
                cases.append(make_case(kind, shape, clutter, seed))
    return cases


def hard_cases() -> list[FanCase]:
    """Screens where the fan cannot be seen well: the detector may miss, but must say so."""
    cases = []
    seed = 500
    for kind in ("curvilinear", "phased", "linear"):
        for clutter in (("big_box",), ("grey_surround",), ("big_box", "far_field", "text")):
            for shape in ((216, 320), (480, 640)):
                seed += 1
                cases.append(make_case(kind, shape, clutter, seed))
    return cases


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))
