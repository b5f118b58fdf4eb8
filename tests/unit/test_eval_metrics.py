"""Each evaluation metric on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from usgen_desktop.errors import DatasetError
from usgen_desktop.evaluation.dice import dice, dice_per_label, set_dice
from usgen_desktop.evaluation.fid import (
    frechet_distance,
    kernel_inception_distance,
    random_extractor,
    split_halves,
)
from usgen_desktop.evaluation.prepare import dev_split, group_folds, group_split, scarce_subset
from usgen_desktop.evaluation.realism import roc_auc, roc_curve
from usgen_desktop.evaluation.speckle_stats import region_stats


def test_dice_on_known_masks():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :4] = True  # 40 px
    b[:, 2:6] = True  # 40 px, 20 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert np.isnan(dice(np.zeros(4, bool), np.zeros(4, bool)))
    lm1 = np.array([[0, 1, 2], [0, 1, 2]])
    lm2 = np.array([[0, 1, 1], [0, 1, 2]])
    d = dice_per_label(lm1, lm2, [1, 2])
    assert d[1] == pytest.approx(2 * 2 / 5) and d[2] == pytest.approx(2 / 3)


def test_set_dice_skips_images_without_the_label_but_global_counts_false_positives():
    t = np.zeros((2, 8, 8), np.uint8)
    t[0, 2:6, 2:6] = 1
    p = t.copy()
    p[1, 0:2, 0:2] = 1  # a false positive on the empty image
    d = set_dice(p, t, [1])
    assert d["per_label"]["1"] == 1.0 and d["n_images"]["1"] == 1
    assert d["global"]["1"] == pytest.approx(2 * 16 / (16 + 20))
    assert d["mean"] == 1.0


def test_group_split_never_puts_a_group_on_both_sides():
    rng = np.random.default_rng(3)
    groups = [f"g{int(g)}" for g in rng.integers(0, 40, 300)]
    for seed in range(5):
        train, test = group_split(groups, 0.2, seed)
        assert len(train) + len(test) == len(groups)
        assert not ({groups[i] for i in train} & {groups[i] for i in test})
        assert 0.05 < len(test) / len(groups) < 0.4
    folds = group_folds(groups, 5, 0)
    seen = [{groups[i] for i in f} for f in folds]
    assert sum(len(f) for f in folds) == len(groups)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not (seen[i] & seen[j])
    a, b = split_halves(groups, 0)
    assert not ({groups[i] for i in a} & {groups[i] for i in b})


def test_dev_split_holds_out_whole_groups_of_named_images():
    names = ["a.png", "b.png", "c.png", "d.png"]
    groups = ["g1", "g1", "g2", "g3"]
    train, test = dev_split(names, groups, ["b.png"])
    assert sorted(test) == [0, 1] and sorted(train) == [2, 3]


def test_auc_known_values_and_ties():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5] * 6, [0, 1] * 3) == 0.5
    assert roc_auc([0.1, 0.6, 0.4, 0.9], [0, 0, 1, 1]) == pytest.approx(0.75)
    fpr, tpr = roc_curve([0.1, 0.6, 0.4, 0.9], [0, 0, 1, 1])
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_fid_near_zero_on_identical_sets_and_large_on_different_ones():
    rng = np.random.default_rng(0)
    a = rng.random((40, 32, 32)).astype(np.float32)
    b = rng.random((40, 32, 32)).astype(np.float32) * 0.3 + 0.6
    fx = random_extractor(dim=16, seed=1)
    same = frechet_distance(fx(a), fx(a))
    diff = frechet_distance(fx(a), fx(b))
    assert same < 1e-6
    assert diff > 1e-2 and diff > 1000 * same
    kid_same, _ = kernel_inception_distance(fx(a), fx(a), 20, seed=0)
    kid_diff, _ = kernel_inception_distance(fx(a), fx(b), 20, seed=0)
    assert kid_diff > abs(kid_same) * 10


def test_fid_of_shifted_gaussians_matches_the_formula():
    rng = np.random.default_rng(1)
    f1 = rng.standard_normal((4000, 3))
    f2 = rng.standard_normal((4000, 3)) + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(f1, f2) == pytest.approx(4.0, abs=0.3)


def test_speckle_stats_of_rayleigh_envelope():
    rng = np.random.default_rng(2)
    amp = rng.rayleigh(1.0, 200_000)
    # log-compress over 60 dB the way a scanner does, then check the linearised statistics
    db = 20 * np.log10(amp / amp.max())
    px = np.clip((db + 60) / 60 * 255, 0, 255)
    s = region_stats(px, 60.0)
    assert s["envelope_snr"] == pytest.approx(1.91, abs=0.1)
    assert s["nakagami_m"] == pytest.approx(1.0, abs=0.1)


def test_band_power_ratio_finds_smooth_and_noisy_texture_where_it_is():
    import cv2

    from usgen_desktop.evaluation.spectrum import band_power_ratio, octave_bands

    assert octave_bands(128) == [(1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 64)]
    rng = np.random.default_rng(3)
    # images with structure at every scale: smoothed noise plus fine noise
    real = np.stack([cv2.GaussianBlur(rng.normal(0, 1, (64, 64)), (0, 0), 4) * 4
                     + rng.normal(0, 0.3, (64, 64)) for _ in range(40)]).astype(np.float32)
    same = band_power_ratio(real, real.copy())
    assert same["ratio"] == pytest.approx([1.0] * len(same["bands"]))
    blurred = np.stack([cv2.GaussianBlur(x, (0, 0), 1.0) for x in real])
    r = band_power_ratio(real, blurred)
    assert r["finest_band_ratio"] < 0.3  # the finest octave loses most of its power
    assert r["ratio"][0] == pytest.approx(1.0, abs=0.05)  # the coarsest keeps it
    noisy = real + rng.normal(0, 0.3, real.shape).astype(np.float32)
    assert band_power_ratio(real, noisy)["finest_band_ratio"] > 1.5
    assert "skipped" in band_power_ratio(real[:0], real)


def test_evaluation_modules_import_without_torch_or_qt():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import usgen_desktop.evaluation, usgen_desktop.cli.evaluate_cmd\n"
        "for m in ('config', 'prepare', 'dice', 'nets', 'segmentation', 'realism', 'fid',\n"
        "          'fidelity', 'speckle_stats', 'spectrum', 'report', 'evaluate'):\n"
        "    __import__('usgen_desktop.evaluation.' + m)\n"
        "bad = [m for m in ('torch', 'PySide6', 'matplotlib') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_paired_bootstrap_interval_holds_a_known_gain_and_excludes_zero():
    from usgen_desktop.evaluation.dice import paired_bootstrap

    rng = np.random.default_rng(0)
    a = rng.uniform(0.4, 0.8, 200)
    b = a + 0.05 + rng.normal(0, 0.02, 200)
    r = paired_bootstrap(a, b, [f"g{i // 2}" for i in range(200)], seed=0)
    assert r["ci95_low"] < 0.05 < r["ci95_high"] and r["ci95_low"] > 0
    same = paired_bootstrap(a, a + rng.normal(0, 0.05, 200), [f"g{i}" for i in range(200)])
    assert same["ci95_low"] < 0 < same["ci95_high"]


def test_stratified_group_split_keeps_a_rare_class_on_both_sides():
    groups = [f"g{i // 2}" for i in range(200)]  # pairs of near-duplicates
    strata = ["rare" if i < 20 else "common" for i in range(200)]
    for seed in range(5):
        train, test = group_split(groups, 0.2, seed, strata=strata)
        test_rare = sum(strata[i] == "rare" for i in test)
        assert test_rare == 4  # 20 % of the 10 rare groups, two images each
        assert not ({groups[i] for i in train} & {groups[i] for i in test})


def test_group_split_is_pinned_because_the_default_model_holds_out_its_dev_split():
    # scripts/train_default.py and benchmarks/bench_eval.py both derive the BUSI dev split from
    # group_split(..., 0.2, 0, strata=classes); if this changes, the shipped model's dev
    # split and the evaluation's stop matching and the model may have trained on the test set
    groups = [f"g{i // 2}" for i in range(40)]
    strata = ["a" if i < 20 else "b" for i in range(40)]
    _, test = group_split(groups, 0.2, 0, strata=strata)
    assert test.tolist() == [8, 9, 12, 13, 24, 25, 38, 39]


def test_scarce_subset_keeps_whole_groups_of_each_class_and_is_pinned():
    # scripts/train_default.py --train-fraction trains a generator on exactly the images that
    # evaluate(real_fraction=...) keeps; both call scarce_subset, so it must not drift
    groups = [f"g{i // 2}" for i in range(80)]
    strata = ["rare" if i < 16 else "common" for i in range(80)]
    keep = scarce_subset(groups, 0.25, 1, strata=strata)
    kept_groups = {groups[i] for i in keep}
    assert all((groups[i] in kept_groups) == (i in set(keep)) for i in range(80))  # whole groups
    assert sum(strata[i] == "rare" for i in keep) == 4  # 25 % of the 8 rare groups
    assert len(keep) == 20
    assert keep.tolist() == sorted(keep.tolist())
    assert keep.tolist() == scarce_subset(groups, 0.25, 1, strata=strata).tolist()
    assert keep.tolist()[:6] == [0, 1, 14, 15, 22, 23]
    assert scarce_subset(groups, 1.0, 1).tolist() == list(range(80))
    with pytest.raises(DatasetError):
        scarce_subset(groups, 0.0, 1)
