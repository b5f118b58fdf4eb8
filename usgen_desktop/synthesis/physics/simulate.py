"""A convolution-model ultrasound simulator: label map in, B-mode image out (numpy + scipy).

The chain, per image, in beam space (depth x beam line; see ``geometry``):

1. tissue properties per sample from the label map and the schema's presets (echogenicity with a
   dark core, scatterer density, attenuation, posterior shadowing/enhancement, outside-the-fan);
2. random scatterers: complex Gaussian amplitudes with a Poisson number of scatterers per sample
   (density is given per resolution cell), so dense tissue gives fully developed speckle
   (envelope mean/std = 1.91, Rayleigh) and sparse regions give brighter, sparser points;
3. IQ = scatterers convolved (FFT) with the baseband point spread function: a Gaussian pulse
   envelope axially (length from frequency and cycles) times a lateral beam profile whose width
   grows with depth (wavelength x depth / aperture). The PSF is evaluated in a few depth zones and
   blended, since a depth-varying PSF is not a single convolution;
4. envelope |IQ|, attenuation accumulated along each beam with time-gain compensation for the
   background tissue (so a more attenuating lesion shadows what lies beneath it), and the
   preset's posterior gain in the columns behind a lesion;
5. for display, as scanners do: spatial compounding (the envelopes of three acquisitions
   steered a few degrees apart, averaged), a skin line under a linear probe, log compression
   into the dynamic range, scan conversion into the image frame, light smoothing; pixels
   outside the field of view are black.

Tissue is not uniform on real scans: a smooth random structure (lobules, bands) with thin
bright streaks (fibres, ligaments), elongated parallel to the skin, modulates the echogenicity
of echogenic regions (hypoechoic lesions and fluid stay uniform). ``envelope`` in the output is
the single, unsteered acquisition before log compression: its statistics are the physics
(Rayleigh, mean/std 1.91, where scatterers are dense).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from usgen_desktop.core.labels import LabelSchema
from usgen_desktop.errors import UsgenError
from usgen_desktop.synthesis.physics import geometry as geo

SIM_VERSION = "speckle-1"
SOUND_SPEED_MM_US = 1.54  # mm per microsecond: wavelength (mm) = 1.54 / f (MHz)

# Probe defaults: a breast linear array vs abdominal curvilinear vs cardiac phased array.
PROBE_DEFAULTS: dict[str, dict[str, float]] = {
    "linear": {"frequency_mhz": 7.5, "depth_mm": 40.0, "aperture_mm": 12.0},
    "curvilinear": {"frequency_mhz": 5.0, "depth_mm": 70.0, "aperture_mm": 20.0},
    "phased": {"frequency_mhz": 2.5, "depth_mm": 140.0, "aperture_mm": 16.0},
}


@dataclass
class SpeckleParams:
    """Simulator settings. None means "the probe's default" (``PROBE_DEFAULTS``)."""

    probe: str | None = None  # linear | curvilinear | phased; None: the schema's
    frequency_mhz: float | None = None
    depth_mm: float | None = None  # imaged depth (top of the field of view to its bottom)
    aperture_mm: float | None = None
    cycles: float = 3.0  # pulse length in cycles (axial resolution)
    dynamic_range_db: float = 40.0
    gain_db: float = 0.0
    heterogeneity: float = 0.6  # tissue structure: std of log-echogenicity, smooth in space
    zones: int = 3  # depth zones of the depth-dependent PSF
    smooth_px: float = 0.8  # the scanner's display smoothing after log compression (0: none)
    compounding: int = 3  # steered acquisitions averaged for display (1: a single look)
    skin: float = 1.0  # bright skin line + darker fat under a linear probe (0: none)

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> SpeckleParams:
        """Read the simulator's keys of ``request.params`` (others belong to other backends)."""
        out = cls()
        names = {f.name for f in fields(cls)}
        for key, value in (params or {}).items():
            if key not in names or value is None:
                continue
            if key == "probe":
                if value not in PROBE_DEFAULTS:
                    raise UsgenError(
                        f"Unknown probe '{value}' (choose linear, curvilinear or phased)."
                    )
                out.probe = str(value)
                continue
            try:
                num = float(value)
            except (TypeError, ValueError):
                raise UsgenError(f"The speckle setting '{key}' must be a number.") from None
            if not np.isfinite(num) or (num <= 0 and key not in ("gain_db", "heterogeneity", "smooth_px", "skin")):
                raise UsgenError(f"The speckle setting '{key}' must be a positive number.")
            setattr(out, key, int(num) if key in ("zones", "compounding") else num)
        out.zones = max(1, min(int(out.zones), 8))
        out.compounding = max(1, min(int(out.compounding), 9))
        return out

    def resolved(self, probe: str) -> SpeckleParams:
        d = PROBE_DEFAULTS[probe]
        return SpeckleParams(
            probe=probe,
            frequency_mhz=self.frequency_mhz or d["frequency_mhz"],
            depth_mm=self.depth_mm or d["depth_mm"],
            aperture_mm=self.aperture_mm or d["aperture_mm"],
            cycles=self.cycles, dynamic_range_db=self.dynamic_range_db, gain_db=self.gain_db,
            heterogeneity=max(0.0, self.heterogeneity), zones=self.zones,
            smooth_px=self.smooth_px, compounding=self.compounding, skin=self.skin,
        )


@dataclass
class SpeckleOutput:
    """The image plus the intermediate envelope (beam space, before log compression)."""

    image: np.ndarray  # uint8, the label map's size
    envelope: np.ndarray  # float32 beam space, after gains, before log compression
    beam_labels: np.ndarray  # uint8 label ids in beam space
    geometry: geo.Geometry
    params: SpeckleParams


def tissue_tables(schema: LabelSchema, klass: str | None) -> dict[str, np.ndarray]:
    """256-entry lookup tables (indexed by label id) of every tissue property."""
    default = schema.tissue_for(0, klass)
    keys = ("echogenicity", "density", "attenuation", "posterior", "core")
    tables = {k: np.full(256, getattr(default, k), np.float32) for k in keys}
    tables["outside"] = np.zeros(256, bool)
    # Ids the schema does not know get the background's tissue, except outside-ness.
    tables["outside"][0] = default.outside
    for lab in schema.labels:
        t = schema.tissue_for(lab.id, klass)
        for k in keys:
            tables[k][lab.id] = getattr(t, k)
        tables["outside"][lab.id] = t.outside
    return tables


def choose_geometry(labels: np.ndarray, schema: LabelSchema, outside: np.ndarray,
                    probe: str | None) -> tuple[geo.Geometry, str]:
    """The beam geometry for this label map, and the probe kind whose defaults apply."""
    fan = ~outside[labels]
    kind = probe or schema.probe
    if kind not in PROBE_DEFAULTS:
        kind = "linear"
    if kind == "linear" or fan.all():
        return geo.linear(labels.shape), ("linear" if kind == "linear" else kind)
    g = geo.estimate(fan)
    return g, kind


def _core_factor(labels: np.ndarray, core: np.ndarray) -> np.ndarray | None:
    """Per-pixel darkening of region interiors (``core``), 1 at a region's edge."""
    ids = [int(i) for i in np.flatnonzero(core > 0) if (labels == i).any()]
    if not ids:
        return None
    import cv2

    out = np.ones(labels.shape, np.float32)
    for i in ids:
        mask = (labels == i).astype(np.uint8)
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        depth = dist / max(float(dist.max()), 1.0)
        ramp = np.clip((depth - 0.06) / 0.45, 0.0, 1.0)
        ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible ring
        out = np.where(mask > 0, 1.0 - core[i] * ramp, out).astype(np.float32)
    return out


def _structure(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Random tissue structure, longer across the beam than along it (fat lobules, fibres and
    ligaments lie roughly parallel to the skin): a smooth field of unit std (lobules and
    bands) and a sparse field of thin bright streaks (0 almost everywhere)."""
    import cv2

    n_r, n_t = shape

    def layer(rows: int, cols: int) -> np.ndarray:
        lo = rng.standard_normal((max(2, rows), max(2, cols))).astype(np.float32)
        f = cv2.resize(lo, (n_t, n_r), interpolation=cv2.INTER_CUBIC)
        return (f - f.mean()) / max(float(f.std()), 1e-6)

    field = layer(n_r // 16 + 2, n_t // 64 + 2) + 0.7 * layer(n_r // 3 + 2, n_t // 48 + 2)
    field /= max(float(field.std()), 1e-6)
    thin = layer(n_r // 2 + 2, n_t // 24 + 2)
    streaks = np.clip(thin - 1.7, 0.0, None)
    return field, streaks / max(float(streaks.max()), 1e-6)


def _gaussian_tf(n: int, sigma: float) -> np.ndarray:
    """Fourier transform of a unit-peak sampled Gaussian of std ``sigma`` (samples)."""
    k = np.fft.fftfreq(n).astype(np.float32)
    return np.exp(-2.0 * (np.pi * sigma * k) ** 2).astype(np.float32)


def simulate(labels: np.ndarray, schema: LabelSchema, klass: str | None, seed: int,
             params: SpeckleParams | None = None) -> SpeckleOutput:
    """Simulate one B-mode image for ``labels`` (uint8 HxW). Same seed, same image."""
    from scipy import fft as sfft

    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    tables = tissue_tables(schema, klass)
    sid = schema.sector_id
    if sid is not None and tables["outside"].any() and not (labels == sid).any():
        # A fan schema, but no fan drawn (e.g. HC18's head-only masks): the whole image is the
        # field of view, and "outside" pixels are imaged as the sector's tissue, not black.
        out_ids = tables["outside"].copy()
        tables = {k: v.copy() for k, v in tables.items()}
        for key, table in tables.items():
            table[out_ids] = False if key == "outside" else table[sid]
    g, kind = choose_geometry(labels, schema, tables["outside"], (params or SpeckleParams()).probe)
    p = (params or SpeckleParams()).resolved(kind)
    rng = np.random.default_rng(int(seed))

    # 1. tissue in the image frame (exact label boundaries), then into beam space
    outside_px = tables["outside"][labels]
    echo_img = tables["echogenicity"][labels]
    core = _core_factor(labels, tables["core"])
    if core is not None:
        echo_img = echo_img * core
    echo_img = np.where(outside_px, 0.0, echo_img).astype(np.float32)
    beam_labels = geo.to_beam(labels, g, nearest=True)
    echo = geo.to_beam(echo_img, g, nearest=False)
    n_r, n_t = beam_labels.shape

    # 2. resolution of the probe, in beam samples
    mm_px = p.depth_mm / max(g.depth_px, 1.0)  # image pixels are square
    row_mm = mm_px * (g.depth_px / max(n_r - 1, 1))  # one beam sample along depth
    lam = SOUND_SPEED_MM_US / p.frequency_mhz
    ax_fwhm_mm = 0.5 * p.cycles * lam * 1.2  # round-trip pulse length (~FWHM of its envelope)
    sig_ax = max(0.7, ax_fwhm_mm / 2.355 / row_mm)

    def lateral_sigma(z_mm: float) -> float:
        # Dynamic receive focusing: beam width ~ wavelength x F-number (depth / aperture),
        # with an F-number of at least 2 near the face. In a fan, one beam line spans more
        # millimetres with depth, so the width in lines is taken at this depth's radius.
        width_mm = lam * max(z_mm / p.aperture_mm, 2.0) * 1.4
        if g.kind == "linear":
            sig = width_mm / 2.355 / mm_px
        else:
            r_px = g.radius[0] + z_mm / mm_px
            col_px = max(r_px, 1.0) * (g.theta[1] - g.theta[0]) / max(n_t - 1, 1)
            sig = width_mm / mm_px / 2.355 / col_px
        return max(0.8, sig)

    z_mid = 0.5 * p.depth_mm
    cell = (2.355 * sig_ax) * (2.355 * lateral_sigma(z_mid))  # resolution cell, in samples

    # 3. scatterers: amplitude x sqrt(Poisson count / mean count) x complex Gaussian
    lam_px = tables["density"][beam_labels] / np.float32(max(cell, 1e-3))
    amp = echo.astype(np.float32)
    if p.heterogeneity > 0:
        field, streaks = _structure(rng, (n_r, n_t))
        # Structure belongs to parenchyma: hypoechoic regions (lesions, fluid) stay uniform.
        weight = np.clip(tables["echogenicity"][beam_labels] / 0.5, 0.0, 1.0) ** 2
        amp = amp * np.exp(p.heterogeneity * weight * (field + 3.0 * streaks))
    noise = rng.standard_normal((2, n_r, n_t), dtype=np.float32)
    sparse = lam_px < 4.0  # where counts are large, sqrt(n / mean) ~ 1: skip the draw
    if sparse.any():
        counts = rng.poisson(lam_px[sparse])
        scale = np.ones((n_r, n_t), np.float32)
        scale[sparse] = np.sqrt(counts / lam_px[sparse])
        amp = amp * scale
    scat = (noise[0] + 1j * noise[1]).astype(np.complex64) * (amp * np.float32(np.sqrt(0.5)))

    # 4. IQ by FFT convolution with the depth-zoned PSF
    zs = [(k + 0.5) / p.zones * p.depth_mm for k in range(p.zones)]
    sig_lats = [lateral_sigma(z) for z in zs]
    pad_r = int(3 * sig_ax) + 2
    pad_t = int(3 * max(sig_lats)) + 2
    fr, ft = sfft.next_fast_len(n_r + 2 * pad_r), sfft.next_fast_len(n_t + 2 * pad_t)
    spec = sfft.fft2(scat, s=(fr, ft), workers=2)
    h_ax = _gaussian_tf(fr, sig_ax)[:, None]
    weights = _zone_weights(n_r, len(sig_lats))
    # Spatial compounding (as scanners do): acquisitions steered a few degrees apart see the
    # same scatterers with decorrelated speckle; steering shifts the PSF's lateral spectrum,
    # here by 1.5 of its widths per step. The display averages their envelopes.
    envs = []
    for k in range(p.compounding):
        steer = k - (p.compounding - 1) / 2.0
        envs.append(_zoned_envelope(spec, h_ax, ft, sig_lats, weights, steer, n_r, n_t, sfft))
    # The unsteered acquisition (the middle one, or the first of an even count) is what the
    # envelope statistics describe: single-look, fully developed speckle.
    env = envs[(p.compounding - 1) // 2]
    shown = env if len(envs) == 1 else np.mean(envs, axis=0).astype(np.float32)

    # 5. attenuation with time-gain compensation for the background tissue, posterior gains
    inside = ~tables["outside"][beam_labels]
    alpha = tables["attenuation"][beam_labels]
    if inside.any():
        vals, counts = np.unique(beam_labels[inside], return_counts=True)
        alpha_ref = float(tables["attenuation"][vals[counts.argmax()]])
    else:
        alpha_ref = float(alpha.mean())
    dz_cm = row_mm / 10.0
    excess_db = 2.0 * p.frequency_mhz * dz_cm * np.cumsum(
        np.where(inside, alpha - alpha_ref, 0.0), axis=0, dtype=np.float32)
    gain = np.power(np.float32(10.0), -excess_db / np.float32(20.0)).astype(np.float32)
    gain *= _posterior_gain(beam_labels, tables, inside)
    env *= gain
    shown = shown * gain if shown is not env else env
    if p.skin > 0 and g.kind == "linear":
        shown = shown * _skin(n_r, row_mm, p.skin)[:, None]

    # 6. log compression and scan conversion
    db = 20.0 * np.log10(shown + 1e-6) + p.gain_db
    grey = np.clip((db + 0.42 * p.dynamic_range_db) / p.dynamic_range_db, 0.0, 1.0)
    grey = geo.to_image(grey.astype(np.float32), g)
    if p.smooth_px > 0:
        import cv2

        grey = cv2.GaussianBlur(grey, (0, 0), sigmaX=p.smooth_px)
    image = np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image[outside_px] = 0
    return SpeckleOutput(image, env, beam_labels, g, p)


def _zone_weights(n_r: int, zones: int) -> list[np.ndarray]:
    """Linear blending weights (summing to 1) of the depth zones, per beam sample."""
    if zones == 1:
        return [np.ones(n_r, np.float32)]
    depth = (np.arange(n_r, dtype=np.float32) + 0.5) / n_r * zones - 0.5
    out = []
    for k in range(zones):
        w = np.clip(1.0 - np.abs(depth - k), 0.0, 1.0)
        if k == 0:
            w[depth < 0] = 1.0
        if k == zones - 1:
            w[depth > k] = 1.0
        out.append(w.astype(np.float32))
    return out


def _zoned_envelope(spec: np.ndarray, h_ax: np.ndarray, ft: int, sig_lats: list[float],
                    weights: list[np.ndarray], steer: float, n_r: int, n_t: int,
                    sfft: Any) -> np.ndarray:
    """|IQ| of one acquisition: the scatterer spectrum times each zone's PSF, blended."""
    k = np.fft.fftfreq(ft).astype(np.float32)
    iq = np.zeros((n_r, n_t), np.complex64)
    for s_lat, w in zip(sig_lats, weights, strict=True):
        shift = steer * 1.5 / (2 * np.pi * s_lat)  # in cycles per beam line
        h_lat = np.exp(-2.0 * (np.pi * s_lat * (k - shift)) ** 2).astype(np.float32)
        tf = h_ax * h_lat[None, :]
        # Unit output power for unit-power white scatterers (Parseval), in every zone.
        tf = tf / np.float32(np.sqrt(np.mean(tf * tf)))
        # Circular convolution: the PSF tails of the bottom rows wrap into the padding, not
        # into the image, because the field sits at the start of the padded grid.
        part = sfft.ifft2(spec * tf, workers=2)[:n_r, :n_t]
        # Blend the complex IQ, not envelopes: a linear, depth-varying filter keeps the
        # Gaussian statistics of the field (the envelope stays Rayleigh between zones), and
        # weights summing to 1 keep the intensity flat since neighbouring zones' fields are
        # nearly the same.
        iq += part * w[:, None]
    return np.abs(iq).astype(np.float32)


def _skin(n_r: int, row_mm: float, strength: float) -> np.ndarray:
    """Gain along depth for the skin line under a linear probe: a bright band ~0.6 mm thick
    at the face, then the darker subcutaneous layer for a few mm."""
    z = (np.arange(n_r, dtype=np.float32) + 0.5) * row_mm
    bright = np.exp(-0.5 * ((z - 0.5) / 0.35) ** 2) * 1.8
    dark = -0.35 * np.exp(-0.5 * ((z - 3.0) / 1.5) ** 2)
    return np.exp(strength * (bright + dark)).astype(np.float32)


def _posterior_gain(beam_labels: np.ndarray, tables: dict[str, np.ndarray],
                    inside: np.ndarray) -> np.ndarray:
    """Shadowing (< 1) or enhancement (> 1) in the beam lines behind each region."""
    import cv2

    gain = np.ones(beam_labels.shape, np.float32)
    post = tables["posterior"]
    for i in np.unique(beam_labels):
        if post[i] == 1.0 or tables["outside"][i]:
            continue
        mask = beam_labels == i
        if mask.all():
            continue
        behind = np.logical_and(np.maximum.accumulate(mask, axis=0), ~mask)
        # Soft lateral edges; a region only a few samples wide casts a weak shadow.
        soft = cv2.GaussianBlur(behind.astype(np.float32), (0, 0), sigmaX=2.5, sigmaY=1.5)
        gain *= np.power(np.float32(post[i]), soft * inside).astype(np.float32)
    return gain
