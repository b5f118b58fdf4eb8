"""The HTML report: headline table, plots (Dice per arm, ROC, speckle statistics) and a grid
of real beside synthetic images. Plots are PNG files beside report.html and are also embedded
(base64), so the HTML alone can be mailed. Plots need matplotlib (``usgen-desktop[eval]``);
without it the report says so and keeps the tables and the sample grid (drawn with OpenCV)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.evaluation.prepare import EvalSet

ARM_NAMES = {"real_only": "real only", "real_plus_synthetic": "real + synthetic",
             "synthetic_only": "synthetic only"}
PALETTE = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (120, 255, 120), (255, 100, 255)]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return html.escape(str(v))


def _figure(w: float, h: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, so no global backend is switched
    under a running Qt app), or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_dice(seg: dict[str, Any], labels: dict[str, str], path: Path) -> bool:
    fig = _figure(5.5, 3.4)
    if fig is None or not seg:
        return False
    ax = fig.add_subplot(111)
    arms = [a for a in ARM_NAMES if a in seg]
    fg = [k for k in seg[arms[0]]["per_label"]]
    width = 0.8 / (len(fg) + 1)
    x = np.arange(len(arms))
    err = [seg[a].get("std_over_seeds") or 0.0 for a in arms]
    ax.bar(x, [seg[a]["mean"] for a in arms], width, label="mean", color="#444",
           yerr=err if any(err) else None, capsize=4)
    for j, k in enumerate(fg if len(fg) > 1 else []):
        ax.bar(x + (j + 1) * width, [seg[a]["per_label"][k] for a in arms], width,
               label=labels.get(k, k))
    for xi, a in zip(x, arms, strict=True):
        ax.text(xi, seg[a]["mean"] + 0.01, f"{seg[a]['mean']:.3f}", ha="center", fontsize=8)
    ax.set_xticks(x + width * (len(fg) if len(fg) > 1 else 0) / 2)
    ax.set_xticklabels([ARM_NAMES[a] for a in arms])
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice on held-out real images")
    ax.set_title("Downstream segmentation (same step budget per arm)", fontsize=10)
    if len(fg) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


def plot_roc(realism: dict[str, Any], path: Path) -> bool:
    fig = _figure(3.6, 3.4)
    if fig is None or "roc_fpr" not in realism:
        return False
    ax = fig.add_subplot(111)
    ax.plot(realism["roc_fpr"], realism["roc_tpr"], color="#c33",
            label=f"AUC {realism['auc']:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="#999", label="indistinguishable")
    ax.set_xlabel("real called synthetic (FPR)")
    ax.set_ylabel("synthetic caught (TPR)")
    ax.set_title(f"Real vs synthetic, {realism['folds']}-fold CV", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return True


def plot_speckle(speckle: dict[str, Any], path: Path) -> bool:
    entries = [(k, e) for k, e in speckle.get("labels", {}).items()
               if e.get("real") and e.get("synthetic")]
    fig = _figure(3.2 * max(1, len(entries)), 5.6)
    if fig is None or not entries:
        return False
    bins = np.arange(64) * 4 + 2
    # skewness can be negative, so its ratio means nothing: it stays in the table only
    stats = ["mean", "std", "snr", "envelope_snr", "nakagami_m"]
    for j, (_k, e) in enumerate(entries):
        ax = fig.add_subplot(2, len(entries), j + 1)
        ax.plot(bins, e["real"]["histogram"], label="real", color="#246")
        ax.plot(bins, e["synthetic"]["histogram"], label="synthetic", color="#c33")
        ax.set_title(f"{e['name']}: overlap {e.get('histogram_overlap', float('nan')):.2f}",
                     fontsize=9)
        ax.set_xlabel("pixel value", fontsize=8)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=7)
        ax2 = fig.add_subplot(2, len(entries), len(entries) + j + 1)
        ratio = e.get("ratio_synthetic_to_real", {})
        vals = [ratio.get(s, float("nan")) for s in stats]
        # log2 of the ratio as bars from 0, so halving and doubling look equally far off
        logs = [float(np.clip(np.log2(v), -3, 3)) if v > 0 else np.nan for v in vals]
        colors = ["#c33" if abs(v) > 0.32 else "#888" for v in logs]  # off by > 25 %
        ax2.barh(range(len(stats)), logs, color=colors)
        ax2.axvline(0.0, color="#246", linestyle="--")
        ax2.set_xlim(-3.2, 3.2)
        ax2.set_xticks(range(-3, 4))
        ax2.set_xticklabels(["1/8", "1/4", "1/2", "1", "2", "4", "8"])
        ax2.set_yticks(range(len(stats)))
        ax2.set_yticklabels(stats, fontsize=7)
        ax2.set_xlabel("synthetic / real (medians)", fontsize=8)
        ax2.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _tile(img: np.ndarray, mask: np.ndarray, tile: int) -> np.ndarray:
    import cv2

    g = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    g = cv2.resize(g, (tile, tile), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    m = cv2.resize(mask, (tile, tile), interpolation=cv2.INTER_NEAREST)
    for k in range(1, int(m.max()) + 1):
        contours, _ = cv2.findContours((m == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, PALETTE[(k - 1) % len(PALETTE)], 1)
    return rgb


def _pairs_by_class(real: EvalSet, synthetic: EvalSet, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` (real, synthetic) index pairs of the same class, classes taken in turn,
    spread over each set."""
    classes = sorted({c for c in synthetic.classes if c} & {c for c in real.classes if c})
    if not classes:
        m = min(n, len(real), len(synthetic))
        if m == 0:
            return []
        return list(zip(np.linspace(0, len(real) - 1, m).round().astype(int).tolist(),
                        np.linspace(0, len(synthetic) - 1, m).round().astype(int).tolist(),
                        strict=True))
    pools = {c: ([i for i, x in enumerate(real.classes) if x == c],
                 [i for i, x in enumerate(synthetic.classes) if x == c]) for c in classes}
    pairs: list[tuple[int, int]] = []
    turn = 0
    while len(pairs) < n and any(min(len(a), len(b)) > turn // len(classes)
                                 for a, b in pools.values()):
        c = classes[turn % len(classes)]
        k = turn // len(classes)
        a, b = pools[c]
        if k < min(len(a), len(b)):
            step_a, step_b = max(1, len(a) // max(1, n)), max(1, len(b) // max(1, n))
            pairs.append((a[(k * step_a) % len(a)], b[(k * step_b) % len(b)]))
        turn += 1
    return pairs


def sample_grid(real: EvalSet, synthetic: EvalSet, n: int, path: Path, tile: int = 128) -> bool:
    """Two rows: real images above, synthetic images of the same class below (classes taken
    in turn), label outlines drawn."""
    import cv2

    pairs = _pairs_by_class(real, synthetic, n)
    if not pairs:
        return False
    n = len(pairs)
    pad = 4
    canvas = np.full((2 * tile + 3 * pad + 42, n * (tile + pad) + pad, 3), 255, np.uint8)
    for row, (es, title) in enumerate([(real, "real"), (synthetic, "synthetic")]):
        y = pad + row * (tile + pad + 14) + 14
        cv2.putText(canvas, title, (pad, y - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for j, pair in enumerate(pairs):
            i = pair[row]
            x = pad + j * (tile + pad)
            canvas[y : y + tile, x : x + tile] = _tile(es.images[i], es.masks[i], tile)
            klass = es.classes[i]
            if klass and row == 1:
                cv2.putText(canvas, str(klass), (x, y + tile + 11), cv2.FONT_HERSHEY_SIMPLEX,
                            0.35, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return True


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>' \
           f'{html.escape(alt)} (<a href="{path.name}">{path.name}</a>)</figcaption></figure>'


def _headline_table(m: dict[str, Any]) -> str:
    h = m.get("headline", {})
    fid = m.get("fid", {})
    seg = m.get("segmentation", {})
    ci = h.get("real_plus_synthetic_gain_ci95") or [None, None]
    rows = [
        ("Dice, real only", _fmt(h.get("dice_real_only")),
         f"U-Net trained on {seg.get('real_only', {}).get('train_images', '–')} real images"),
        ("Dice, real + synthetic", _fmt(h.get("dice_real_plus_synthetic")),
         f"change vs real only {_fmt(h.get('real_plus_synthetic_minus_real_only'))}, per-image "
         f"95 % interval {_fmt(ci[0])} to {_fmt(ci[1])} (goal: above 0)"),
        ("Dice, synthetic only", _fmt(h.get("dice_synthetic_only")),
         f"{_fmt(h.get('synthetic_only_fraction_of_real_only'), 2)} of real only (goal: 0.80)"),
        ("Realism AUC", _fmt(h.get("realism_auc")),
         "0.5 indistinguishable, 1.0 always told apart (goal: below 0.75)"),
    ]
    if fid.get("skipped"):
        rows.append(("FID / KID", "–", html.escape(fid["skipped"])))
    else:
        rows += [
            (f"FID at {fid.get('resolution')}²", _fmt(h.get("fid"), 1),
             f"all {fid.get('n_real')} real vs all {fid.get('n_synthetic')} synthetic"),
            ("FID, real half vs synthetic", _fmt(h.get("fid_half_real_vs_synthetic"), 1),
             f"beside real half vs real half: {_fmt(h.get('fid_real_vs_real'), 1)} "
             f"(N = {fid.get('n_half')})"),
            ("KID", _fmt(h.get("kid"), 4), f"± {_fmt(fid.get('kid_std'), 4)}"),
        ]
    mf = m.get("mask_fidelity", {})
    rows.append(("Mask fidelity (Dice)", _fmt(h.get("mask_fidelity_dice")),
                 f"real-trained U-Net on synthetic images vs their label maps; on real test: "
                 f"{_fmt(mf.get('reference_real_test_dice'))}"))
    body = "".join(f"<tr><th>{a}</th><td class=num>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    goals = h.get("goals", {})
    words = {
        "real_plus_synthetic_beats_real_only":
            "real + synthetic beats real only (95 % interval above 0)",
        "synthetic_only_reaches_80_percent": "synthetic only reaches 80 % of real only",
        "realism_auc_below_0_75": "realism AUC below 0.75",
    }
    marks = {True: "<span class=ok>✔ met</span>", False: "<span class=bad>✘ not met</span>",
             None: "– not measured"}
    goal_rows = "".join(f"<li>{marks[goals.get(k)]}: {w}</li>" for k, w in words.items())
    return f"<table class=headline>{body}</table><p><b>Goals</b></p><ul>{goal_rows}</ul>"


def _speckle_table(speckle: dict[str, Any]) -> str:
    stats = ["mean", "std", "snr", "skewness", "envelope_snr", "nakagami_m"]
    head = "".join(f"<th>{s}</th>" for s in stats)
    rows = []
    for e in speckle.get("labels", {}).values():
        for kind in ("real", "synthetic"):
            d = e.get(kind)
            if not d:
                continue
            cells = "".join(f"<td class=num>{_fmt(d.get(s, {}).get('median'), 2)}</td>"
                            for s in stats)
            rows.append(f"<tr><td>{html.escape(e['name'])}</td><td>{kind}</td>"
                        f"<td class=num>{d['n_images']}</td>{cells}</tr>")
    return (f"<table><tr><th>label</th><th>set</th><th>images</th>{head}</tr>{''.join(rows)}"
            f"</table><p class=note>Medians over images. Envelope SNR and Nakagami m on pixels "
            f"linearised with an assumed {speckle.get('dynamic_range_db')} dB dynamic range; "
            f"fully developed speckle gives 1.91 and 1.0.</p>")


def _spectrum_table(spectrum: dict[str, Any]) -> str:
    bands = spectrum.get("bands")
    if not bands:
        return f"<p class=note>{html.escape(str(spectrum.get('skipped', 'Not measured.')))}</p>"
    head = "".join(f"<th>{lo}–{hi}</th>" for lo, hi in bands)
    cells = "".join(f"<td class=num>{_fmt(v, 2)}</td>" for v in spectrum.get("ratio", []))
    return (f"<table><tr><th>cycles per side ({spectrum.get('size')}² images)</th>{head}</tr>"
            f"<tr><td>power, synthetic / real</td>{cells}</tr></table>"
            "<p class=note>Mean power spectra per octave band, each image's mean removed. Below 1 "
            "in the finest bands: the synthetic speckle is smoother than real; in the coarse "
            "bands: less variation in layout and brightness.</p>")


def _fullsize_table(full: dict[str, Any]) -> str:
    """The full-size critic and octaves, synthetic and control, overall and per class."""
    if not full or "critic" not in full:
        return f"<p class=note>{html.escape(str(full.get('skipped', 'Not measured.')))}</p>"
    oct_ = full.get("octaves", {})
    ctl = full.get("control", {})
    bands = oct_.get("cycles_per_pixel") or oct_.get("bands") or []
    head = "".join(f"<th>{lo:g}–{hi:g}</th>" for lo, hi in bands)

    def cells(d: dict[str, Any]) -> str:
        return "".join(f"<td class=num>{_fmt(v, 2)}</td>" for v in d.get("ratio", []))

    rows = [f"<tr><td>all: synthetic</td><td class=num>{_fmt(full['critic'].get('auc'), 3)}</td>"
            f"{cells(oct_)}</tr>"]
    if ctl:
        rows.append(f"<tr><td>all: control (real through the resize path)</td>"
                    f"<td class=num>{_fmt(ctl.get('critic', {}).get('auc'), 3)}</td>"
                    f"{cells(ctl.get('octaves', {}))}</tr>")
    for c, d in full.get("per_class", {}).items():
        rows.append(f"<tr><td>{html.escape(str(c))}: synthetic</td>"
                    f"<td class=num>{_fmt(d.get('critic_auc'), 3)}</td>{cells(d.get('octaves', {}))}</tr>")
        if "control_octaves" in d:
            rows.append(f"<tr><td>{html.escape(str(c))}: control</td>"
                        f"<td class=num>{_fmt(d.get('control_critic_auc'), 3)}</td>"
                        f"{cells(d['control_octaves'])}</tr>")
    return (f"<table><tr><th>set</th><th>critic AUC</th>{head}</tr>{''.join(rows)}</table>"
            f"<p class=note>{html.escape(full.get('note', ''))}. Critic: the evaluation's small CNN "
            f"on {full['critic'].get('crop', '')}-pixel crops, cross-validated by group (0.5: "
            "indistinguishable). Columns: power per octave, synthetic (or control) over real, in "
            "cycles per pixel; the last is the finest grain.</p>")


def write_report(out: Path, metrics: dict[str, Any], real_samples: EvalSet,
                 synthetic: EvalSet, n_classes: int, n_samples: int = 6) -> dict[str, Any]:
    """Write the plots and report.html into ``out``; return which files were written."""
    files: dict[str, Any] = {}
    figs = []
    labels = metrics.get("labels", {})
    plots = [
        ("plot_dice.png", "Dice per training arm", lambda p: plot_dice(
            metrics.get("segmentation", {}), labels, p)),
        ("plot_roc.png", "ROC of the real-vs-synthetic classifier", lambda p: plot_roc(
            metrics.get("realism", {}), p)),
        ("plot_speckle.png", "Speckle statistics per label region", lambda p: plot_speckle(
            metrics.get("speckle", {}), p)),
    ]
    have_mpl = _figure(1, 1) is not None
    for name, title, fn in plots:
        if fn(out / name):
            figs.append(_img_tag(out / name, title))
            files[name] = title
    grid = out / "samples.png"
    if sample_grid(real_samples, synthetic, n_samples, grid):
        files["samples.png"] = "real (top) beside synthetic (bottom)"
    cfg = metrics.get("config", {})
    sizes = metrics.get("sizes", {})
    note = "" if have_mpl else ("<p class=note>Plots need matplotlib: install "
                                "usgen-desktop[eval].</p>")
    seg_rows = "".join(
        f"<tr><td>{ARM_NAMES[a]}</td><td class=num>{_fmt(d['mean'])}"
        f"{' ± ' + _fmt(d['std_over_seeds']) if d.get('std_over_seeds') is not None else ''}</td>"
        f"<td>{html.escape(', '.join(f'{labels.get(k, k)} {_fmt(v)}' for k, v in d['per_label'].items()))}</td>"
        f"<td>{html.escape(', '.join(f'{labels.get(k, k)} {_fmt(v)}' for k, v in d['global'].items()))}</td>"
        f"<td class=num>{d['train_images']}</td><td class=num>{d['steps']}</td>"
        f"<td class=num>{d['seconds']}</td></tr>"
        for a, d in metrics.get("segmentation", {}).items())
    comp_rows = "".join(
        f"<tr><td>{html.escape(k.replace('_minus_', ' minus ').replace('_', ' '))}</td>"
        f"<td class=num>{_fmt(c['diff'])}</td><td class=num>{_fmt(c['ci95_low'])} to "
        f"{_fmt(c['ci95_high'])}</td><td class=num>{c['n_images']}</td>"
        f"<td class=num>{c.get('n_groups', '–')}</td></tr>"
        for k, c in metrics.get("dice_comparison", {}).items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>USGen evaluation report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; font-size: 14px; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
table.headline th {{ width: 16em; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
figcaption, .note {{ color: #666; font-size: 13px; }}
img {{ max-width: 100%; }}
.ok {{ color: #080; font-weight: 600; }} .bad {{ color: #b00; font-weight: 600; }}
</style></head><body>
<h1>Does the synthetic data help?</h1>
<p>{sizes.get('real', '–')} real images ({sizes.get('real_train', '–')} train /
{sizes.get('real_test', '–')} held-out test, split by
<code>{html.escape(str(cfg.get('group_column')))}</code>: no group on both sides),
{sizes.get('synthetic', '–')} synthetic images ({sizes.get('synthetic_excluded_as_test_leak', 0)}
left out of training because they were made from held-out label maps). All images at
{cfg.get('size')}×{cfg.get('size')}; seed {cfg.get('seed')}.</p>
<h2>Headline</h2>
{_headline_table(metrics)}
<h2>Plots</h2>
{note}{''.join(figs)}
<h2>Real beside synthetic</h2>
{_img_tag(grid, 'Held-out real images (top) and synthetic images (bottom), label outlines drawn') if grid.exists() else ''}
<h2>Downstream segmentation</h2>
<table><tr><th>arm</th><th>mean Dice</th><th>per label (images holding it)</th>
<th>global (all pixels)</th><th>train images</th><th>steps</th><th>seconds</th></tr>{seg_rows}</table>
<table><tr><th>paired, per held-out image</th><th>mean Dice difference</th>
<th>95 % interval (groups resampled)</th><th>images</th><th>groups</th></tr>{comp_rows}</table>
<p class=note>Every arm: the same U-Net ({_fmt(metrics.get('segmentation', {}).get('real_only', {}).get('parameters'))}
parameters), seeds {html.escape(str(metrics.get('seeds', {}).get('segmentation')))}, and
{metrics.get('budget', {}).get('steps_per_arm', '–')} optimiser steps of batch
{cfg.get('batch_size')} ({cfg.get('epochs')} epochs of the real training split).</p>
<h2>Speckle statistics</h2>
{_speckle_table(metrics.get('speckle', {}))}
<h2>Texture by frequency band</h2>
{_spectrum_table(metrics.get('spectrum', {}))}
<h2>Realism at full size (the images' own pixels)</h2>
{_fullsize_table(metrics.get('fullsize', {}))}
<h2>Everything else</h2>
<p>Every number, the configuration, sizes, seeds and timings are in
<a href="metrics.json">metrics.json</a>.</p>
</body></html>
"""
    tmp = out / "report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out / "report.html")
    files["report.html"] = "this report"
    return {"files": files, "plots": have_mpl}
