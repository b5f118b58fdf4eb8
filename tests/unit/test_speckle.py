"""The speckle backend: shapes, seeds, speckle statistics, lesion contrast, shadows, the fan."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from usgen_desktop.core.labels import LabelMap, LabelSchema, load_preset
from usgen_desktop.errors import UsgenError
from usgen_desktop.synthesis.backends.speckle import SpeckleBackend, model_hash
from usgen_desktop.synthesis.physics import geometry as geo

RAYLEIGH_SNR = 1.913  # mean/std of a Rayleigh envelope: sqrt(pi / (4 - pi))


def _with_tissue(schema: LabelSchema, label_id: int, **tissue: float) -> LabelSchema:
    d = schema.to_dict()
    for lab in d["labels"]:
        if lab["id"] == label_id:
            lab["tissue"].update(tissue)
    return LabelSchema.from_dict(d)


def _lesion_map(h: int = 200, w: int = 240, center=(120, 70), axes=(40, 26)) -> LabelMap:
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, center, axes, 0, 0, 360, 1, -1)
    return LabelMap(m)


def _fan_map(h: int = 216, w: int = 320, head: bool = True) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w / 2, yy + 60)
    t = np.arctan2(xx - w / 2, yy + 60)
    fan = (r > 70) & (r < 270) & (np.abs(t) < 0.6)
    m = np.where(fan, 2, 0).astype(np.uint8)
    if head:
        cv2.ellipse(m, (w // 2 + 10, 110), (55, 42), 20, 0, 360, 1, -1)
        m[~fan] = 0
    return m


def _snr(env: np.ndarray) -> float:
    return float(env.mean() / env.std())


@pytest.mark.parametrize("shape", [(64, 64), (97, 131), (256, 200)])
def test_uint8_of_the_label_maps_size(shape):
    out = SpeckleBackend(load_preset("busi")).simulate(LabelMap.empty(*shape), None, 0)
    assert out.image.dtype == np.uint8 and out.image.shape == shape
    assert out.image.std() > 5  # speckle, not a flat field


def test_equal_seeds_equal_different_seeds_different():
    b = SpeckleBackend(load_preset("busi"))
    lm = _lesion_map()
    a1 = b.simulate(lm, "benign", 7).image
    a2 = b.simulate(lm, "benign", 7).image
    a3 = b.simulate(lm, "benign", 8).image
    assert np.array_equal(a1, a2)
    assert np.mean(a1 != a3) > 0.5


def test_fully_developed_speckle_has_rayleigh_snr():
    """Dense homogeneous tissue: envelope mean/std within 0.06 of 1.91 (Rayleigh); the busi
    preset (12 scatterers per cell) within 0.12 (K-distributed, slightly below)."""
    dense = _with_tissue(load_preset("busi"), 0, density=60.0)
    flat = LabelMap.empty(256, 256)
    snrs = [_snr(SpeckleBackend(dense, {"heterogeneity": 0}).simulate(flat, None, s)
                 .envelope[16:-16, 16:-16]) for s in range(3)]
    assert abs(np.mean(snrs) - RAYLEIGH_SNR) < 0.06, snrs
    preset = [_snr(SpeckleBackend(load_preset("busi"), {"heterogeneity": 0})
                   .simulate(flat, None, s).envelope[16:-16, 16:-16]) for s in range(3)]
    assert abs(np.mean(preset) - RAYLEIGH_SNR) < 0.12, preset


def test_sparse_scatterers_are_not_fully_developed():
    sparse = _with_tissue(load_preset("busi"), 0, density=0.5)
    env = SpeckleBackend(sparse, {"heterogeneity": 0}).simulate(
        LabelMap.empty(200, 200), None, 1).envelope[16:-16, 16:-16]
    assert _snr(env) < 1.5  # few scatterers per cell: spikier than Rayleigh


@pytest.mark.parametrize("klass", ["benign", "malignant", None])
def test_hypoechoic_lesion_is_darker_than_its_surroundings(klass):
    schema = load_preset("busi")
    # the preset says hypoechoic: well below the background tissue
    assert schema.tissue_for(1, klass).echogenicity < 0.6 * schema.tissue_for(0, klass).echogenicity
    lm = _lesion_map()
    img = SpeckleBackend(schema).simulate(lm, klass, 3).image.astype(float)
    inside = lm.data == 1
    ring = cv2.dilate(inside.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    ring &= ~cv2.dilate(inside.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert img[inside].mean() < img[ring].mean() - 25


def test_malignant_shadows_and_benign_enhances_below_the_lesion():
    schema = load_preset("busi")
    lm = _lesion_map(240, 240, center=(120, 60), axes=(30, 20))
    below = np.zeros_like(lm.data, bool)
    below[120:220, 105:135] = True  # the columns behind the lesion
    beside = np.zeros_like(below)
    beside[120:220, 20:50] = True
    beside[120:220, 190:220] = True
    ratios = {}
    for klass in ("malignant", "benign"):
        b = SpeckleBackend(schema, {"heterogeneity": 0})
        env = np.mean([b.simulate(lm, klass, s).envelope for s in range(3)], axis=0)
        ratios[klass] = env[below].mean() / env[beside].mean()
    assert ratios["malignant"] < 0.6  # acoustic shadow
    assert ratios["benign"] > 1.2  # posterior enhancement


def test_outside_the_fan_is_black_and_the_fan_is_not():
    m = _fan_map()
    out = SpeckleBackend(load_preset("hc18")).simulate(LabelMap(m), None, 0)
    assert out.geometry.kind == "sector"
    assert (out.image[m == 0] == 0).all()
    inner = cv2.erode((m != 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert out.image[inner].mean() > 40 and (out.image[inner] > 0).mean() > 0.95


def test_fan_geometry_is_recovered_from_the_label_map():
    g = geo.estimate(_fan_map(head=False) != 0)
    assert g.kind == "sector"
    assert abs(g.apex[0] - 160) < 3 and abs(g.apex[1] + 60) < 6
    assert abs(g.theta[0] + 0.6) < 0.04 and abs(g.theta[1] - 0.6) < 0.04


def test_sector_speckle_widens_with_depth():
    """Scan conversion from beam space: lateral speckle size grows with depth, as on scans."""
    schema = _with_tissue(load_preset("hc18"), 2, density=40.0)
    m = _fan_map(300, 400, head=False)
    b = SpeckleBackend(schema, {"heterogeneity": 0, "smooth_px": 0})

    def lateral_corr(img: np.ndarray, rows: slice) -> float:
        band = img[rows, 170:230].astype(float)
        band -= band.mean(axis=1, keepdims=True)
        return float((band[:, :-3] * band[:, 3:]).mean() / band.var())

    shallow, deep = [], []
    for s in range(3):
        img = b.simulate(LabelMap(m), None, s).image
        shallow.append(lateral_corr(img, slice(20, 60)))
        deep.append(lateral_corr(img, slice(165, 205)))
    assert np.mean(deep) > np.mean(shallow) + 0.1


def test_linear_label_boundaries_stay_put():
    """Region properties follow the label map pixel for pixel in the image frame."""
    lm = _lesion_map(160, 160, center=(80, 60), axes=(30, 30))
    b = SpeckleBackend(load_preset("busi"), {"heterogeneity": 0})
    img = np.mean([b.simulate(lm, "benign", s).image.astype(float) for s in range(4)], axis=0)
    row = img[60]  # through the lesion's centre
    grad = np.abs(np.diff(cv2.GaussianBlur(row[None], (0, 0), 1.5)[0]))
    left_edge = int(np.argmax(grad[30:70])) + 30  # the lesion's left edge is at x = 50
    assert abs(left_edge - 50) <= 4


def test_bad_settings_are_one_sentence():
    with pytest.raises(UsgenError, match="frequency_mhz"):
        SpeckleBackend(load_preset("busi"), {"frequency_mhz": "fast"})
    with pytest.raises(UsgenError, match="probe"):
        SpeckleBackend(load_preset("busi"), {"probe": "convex-ish"})
    with pytest.raises(UsgenError):
        SpeckleBackend(load_preset("busi"), {"depth_mm": -3})


def test_settings_change_the_image_and_the_hash_follows_tissue():
    lm = _lesion_map()
    a = SpeckleBackend(load_preset("busi")).simulate(lm, None, 1).image
    b = SpeckleBackend(load_preset("busi"), {"frequency_mhz": 12}).simulate(lm, None, 1).image
    assert not np.array_equal(a, b)
    busi = load_preset("busi")
    assert model_hash(busi) == model_hash(load_preset("busi"))
    assert model_hash(busi) != model_hash(_with_tissue(busi, 1, echogenicity=0.9))


def test_run_through_the_request_api():
    from usgen_desktop.synthesis.request import GenerationRequest, run

    req = GenerationRequest([_lesion_map(), LabelMap.empty(96, 128)], load_preset("busi"),
                            classes=["benign", "normal"], count=2, seed=5)
    res = run(req)
    assert [r.index for r in res] == [0, 1, 2, 3]
    assert res[2].image.shape == (96, 128) and res[2].image.dtype == np.uint8
    p = res[0].provenance
    assert p["backend"] == "speckle" and p["device"] == "cpu" and p["model_hash"]


def test_importing_the_backend_loads_no_torch():
    code = ("import sys, usgen_desktop.synthesis.backends.speckle; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_fan_schema_without_a_drawn_fan_images_the_whole_frame():
    """HC18's own masks hold only the head: id 0 then is tissue, not a black outside."""
    m = np.zeros((120, 160), np.uint8)
    cv2.ellipse(m, (80, 60), (30, 24), 0, 0, 360, 1, -1)
    out = SpeckleBackend(load_preset("hc18")).simulate(LabelMap(m), None, 0)
    assert out.geometry.kind == "linear"
    assert (out.image > 0).mean() > 0.95 and out.image[m == 0].mean() > 40


def test_phased_fan_from_an_apex_in_the_image_and_the_fit_cache_tells_fans_apart():
    h, w = 200, 240
    yy, xx = np.mgrid[0:h, 0:w]
    r, t = np.hypot(xx - w / 2, yy - 2.0), np.arctan2(xx - w / 2, yy - 2.0)
    narrow = np.where((r < 190) & (np.abs(t) < 0.5), 2, 0).astype(np.uint8)
    wide = np.where((r < 190) & (np.abs(t) < 0.7), 2, 0).astype(np.uint8)
    narrow[90:120, 100:140] = 3  # myocardium-like block
    b = SpeckleBackend(load_preset("echo"))
    out_n = b.simulate(LabelMap(narrow), None, 0)
    out_w = b.simulate(LabelMap(wide), None, 0)
    assert out_n.geometry.kind == out_w.geometry.kind == "sector"
    assert out_n.geometry.apex[1] < 10 and out_n.geometry.radius[0] < 5
    assert out_w.geometry.theta[1] > out_n.geometry.theta[1] + 0.1
    assert (out_n.image[narrow == 0] == 0).all() and (out_w.image[wide == 0] == 0).all()
