"""The click-to-mask model: click maps, the simulated clicker, save/reload, fine-tuning, resume."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import lesion_pair
from usgen_desktop.assist.clicks import (
    Click,
    Letterbox,
    click_maps,
    grid_click_maps,
    iou,
    next_click,
)
from usgen_desktop.assist.data import Sample, augment
from usgen_desktop.assist.evaluate import GrabCutMethod, click_curve, summarise

TINY = dict(size=32, channels=(4, 8), click_radius=2.0)


# -- click maps ------------------------------------------------------------------------------
def test_click_maps_are_disks_of_the_radius_in_their_own_channel():
    box = Letterbox((64, 64), 64)  # scale 1: grid pixel == image pixel
    pos, neg = click_maps([Click(20, 30, True), Click(50, 10, False)], box, radius=3)
    yy, xx = np.mgrid[0:64, 0:64]
    expect_pos = (xx - 20) ** 2 + (yy - 30) ** 2 <= 9
    expect_neg = (xx - 50) ** 2 + (yy - 10) ** 2 <= 9
    assert np.array_equal(pos > 0, expect_pos)
    assert np.array_equal(neg > 0, expect_neg)
    assert set(np.unique(pos)) == {0.0, 1.0} and pos.dtype == np.float32
    assert np.count_nonzero(pos) == 29  # the 29 lattice points within radius 3


def test_overlapping_clicks_form_a_union_and_edge_clicks_are_cut():
    box = Letterbox((32, 32), 32)
    pos, _ = click_maps([Click(10, 10, True), Click(11, 10, True), Click(0, 0, True)], box, 2)
    assert pos.max() == 1.0  # union, not a sum
    assert pos[0, 0] == 1.0 and pos[2, 0] == 1.0 and pos[0, 3] == 0.0


def test_letterbox_scales_the_longer_side_and_clicks_follow():
    box = Letterbox((100, 200), 64)  # w 200 -> 64, h 100 -> 32
    assert box.inner == (32, 64)
    gx, gy = box.to_grid(Click(199.5, 99.5, True))  # the far corner of the image
    assert gx == pytest.approx(63.5 * 1.0, abs=0.01) and gy == pytest.approx(31.5, abs=0.01)
    valid = box.valid()
    assert valid[:32, :64].all() and not valid[32:].any()
    # the grid's image round-trips to the image size
    back = box.grid_to_image(np.ones((64, 64), np.float32))
    assert back.shape == (100, 200)


def test_grid_click_maps_match_click_maps():
    box = Letterbox((48, 48), 48)
    clicks = [Click(5.2, 7.8, True), Click(30, 40, False), Click(47, 0, True)]
    pos, neg = click_maps(clicks, box, 4.0)
    grid = grid_click_maps(np.array([[c.x, c.y, c.inside] for c in clicks], np.float32), 48, 4.0)
    assert np.array_equal(grid[0], pos) and np.array_equal(grid[1], neg)


# -- the simulated clicker ---------------------------------------------------------------------
def test_first_click_is_at_the_interior_centre():
    gt = np.zeros((60, 80), bool)
    gt[10:41, 20:71] = True  # 31 x 51 rectangle, centre (45, 25)
    x, y, inside = next_click(gt, np.zeros_like(gt))
    assert inside and y == 25 and 30 <= x <= 60  # the farthest-from-edge ridge of a rectangle


def test_clicker_picks_the_larger_error_and_stops_when_none_is_left():
    gt = np.zeros((60, 60), bool)
    gt[10:30, 10:30] = True
    pred = gt.copy()
    pred[40:58, 40:58] = True  # a big false positive
    pred[12:15, 12:15] = False  # a small false negative
    x, y, inside = next_click(gt, pred)
    assert not inside and 40 <= x < 58 and 40 <= y < 58
    assert next_click(gt, gt) is None


def test_clicks_that_follow_the_clicker_reach_a_perfect_grabcut_free_curve():
    img, m = lesion_pair(64, 80)
    gt = m > 0
    curve = click_curve(GrabCutMethod(), img, gt, max_clicks=5)
    assert len(curve.ious) == 5 and 0.0 <= min(curve.ious) and max(curve.ious) <= 1.0
    s = summarise([curve])
    assert 1 <= s["noc90"] <= 5 and s["iou@1"] == curve.ious[0]


# -- the network ---------------------------------------------------------------------------
torch = pytest.importorskip("torch")


def tiny_samples(n: int = 6) -> list[Sample]:
    out = []
    for i in range(n):
        img, m = lesion_pair(40 + 4 * i, 48, seed=i)
        out.append(Sample(img, m > 0, f"s{i}", "project", f"g{i}"))
    return out


def test_model_reloads_to_identical_outputs(tmp_path):
    from usgen_desktop.assist.model import AssistConfig, build_model, load_model, save_model
    from usgen_desktop.assist.predict import AssistSession

    torch.manual_seed(3)
    model = build_model(AssistConfig(**TINY))
    with torch.no_grad():  # make batch norm's running stats non-trivial
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    img, _ = lesion_pair(50, 70)
    a = AssistSession(model, img)
    b = AssistSession(again, img)
    clicks = [Click(35, 25, True), Click(5, 5, False)]
    pa = a.probabilities(clicks, np.zeros((32, 32), np.float32))
    pb = b.probabilities(clicks, np.zeros((32, 32), np.float32))
    assert np.array_equal(pa, pb)
    assert again.config.size == 32 and again.config.channels == (4, 8)
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_load_model_names_a_wrong_folder(tmp_path):
    from usgen_desktop.assist.model import load_model
    from usgen_desktop.errors import ModelError

    with pytest.raises(ModelError, match="not an assist model folder"):
        load_model(tmp_path)


def test_augment_with_no_strength_is_the_inference_letterbox():
    from usgen_desktop.assist.data import normalise_image

    s = tiny_samples(1)[0]
    img, mask, valid = augment(s, 32, np.random.default_rng(0), strength=0.0)
    box = Letterbox(s.image.shape, 32)
    assert np.allclose(img, normalise_image(box.image_to_grid(s.image), box.valid()))
    assert np.array_equal(valid, box.valid())
    assert mask.any()


def _fixed_loss(model, samples) -> float:
    """Loss after one centre click on the un-augmented samples (eval mode, deterministic)."""
    from usgen_desktop.assist.train import _inputs, seg_loss

    model.eval()
    size = model.config.size
    batch = [augment(s, size, np.random.default_rng(0), 0.0) for s in samples]
    imgs = np.stack([b[0] for b in batch])
    gts = np.stack([b[1] for b in batch])
    valids = np.stack([b[2] for b in batch])
    pts = [[(*next_click(g, np.zeros_like(g))[:2], True)] for g in gts]
    with torch.no_grad():
        logits = model(_inputs(imgs, pts, np.zeros_like(valids), valids,
                               model.config.click_radius))
    return float(seg_loss(logits, torch.from_numpy(gts[:, None].astype(np.float32)),
                          torch.from_numpy(valids[:, None])))


def test_fine_tuning_a_tiny_project_lowers_the_loss(tmp_path):
    from usgen_desktop.assist.model import AssistConfig, build_model, load_model, save_model
    from usgen_desktop.assist.train import TrainOptions, train_assist

    torch.manual_seed(0)
    save_model(build_model(AssistConfig(**TINY)), tmp_path / "init")
    samples = tiny_samples()
    before = _fixed_loss(load_model(tmp_path / "init"), samples)
    res = train_assist(samples, tmp_path / "run", TrainOptions(steps=60, batch=4, lr=1e-2,
                                                               checkpoint_every=0),
                       init_from=tmp_path / "init", log_every=10)
    after = _fixed_loss(load_model(tmp_path / "run"), samples)
    assert res.steps == 60 and len(res.losses) == 6
    assert after < 0.8 * before, (before, after)


def test_a_cancelled_run_resumes_to_the_same_weights(tmp_path):
    from usgen_desktop.assist.model import AssistConfig, load_model
    from usgen_desktop.assist.train import TrainOptions, has_checkpoint, train_assist
    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.errors import Cancelled

    samples = tiny_samples(4)
    opts = TrainOptions(steps=8, batch=2, lr=1e-3, checkpoint_every=3, max_corrections=1)
    cfg = AssistConfig(**TINY)
    train_assist(samples, tmp_path / "straight", opts, cfg)

    token = CancelToken()

    def stop_at_5(p) -> None:
        if p.done == 5:
            token.cancel()

    with pytest.raises(Cancelled):
        train_assist(samples, tmp_path / "broken", opts, cfg, progress=stop_at_5, cancel=token)
    assert has_checkpoint(tmp_path / "broken")
    res = train_assist(samples, tmp_path / "broken", resume=True)
    assert res.steps == 8
    a = load_model(tmp_path / "straight").state_dict()
    b = load_model(tmp_path / "broken").state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_project_documents_become_one_sample_per_label_and_skip_the_sector():
    from usgen_desktop.assist.data import samples_from_documents
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import Label, LabelMap, LabelSchema

    schema = LabelSchema("t", (Label(0, "outside", (0, 0, 0)), Label(1, "head", (255, 0, 0)),
                               Label(2, "fan", (0, 0, 255))), sector_id=2)
    data = np.full((40, 50), 2, np.uint8)
    data[:, :5] = 0
    data[10:20, 10:30] = 1
    img = np.random.default_rng(0).integers(0, 255, (40, 50)).astype(np.uint8)
    doc = Document(LabelMap(data), schema, UltrasoundImage(img), name="d")
    got = samples_from_documents([doc, Document(LabelMap(data.copy()), schema, None)])
    assert len(got) == 1 and got[0].mask.sum() == 200 and got[0].name == "d#1"


def test_paint_mask_is_one_undo_step_and_respects_the_lock():
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.labels import Label, LabelMap, LabelSchema

    schema = LabelSchema("t", (Label(0, "bg", (0, 0, 0)), Label(1, "a", (255, 0, 0)),
                               Label(2, "b", (0, 255, 0))))
    doc = Document(LabelMap.empty(30, 30), schema)
    doc.labels.data[0:5, 0:5] = 2
    mask = np.zeros((30, 30), bool)
    mask[2:20, 2:20] = True
    doc.edit_lock = 1
    assert doc.paint_mask(mask, 1, "smart") is not None
    assert len(doc.history) == 1
    assert (doc.labels.data[0:5, 0:5] == 2).all()  # the locked-out label is untouched
    assert (doc.labels.data[5:20, 5:20] == 1).all()
    doc.undo()
    assert not (doc.labels.data == 1).any()


def test_sector_clip_removes_what_lies_outside_the_fan():
    from usgen_desktop.assist.apply import clip_to_sector
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.labels import Label, LabelMap, LabelSchema

    schema = LabelSchema("t", (Label(0, "outside", (0, 0, 0)), Label(1, "head", (255, 0, 0)),
                               Label(2, "fan", (0, 0, 255))), sector_id=2)
    data = np.zeros((40, 40), np.uint8)
    data[:, 20:] = 2
    doc = Document(LabelMap(data), schema)
    clipped = clip_to_sector(np.ones((40, 40), bool), doc)
    assert clipped[:, 20:].all() and not clipped[:, :20].any()
    cv2.setNumThreads(1)


def test_keep_clicked_parts_drops_blobs_without_an_inside_click():
    from usgen_desktop.assist.predict import keep_clicked_parts

    mask = np.zeros((40, 40), bool)
    mask[5:15, 5:15] = True
    mask[25:35, 25:35] = True
    kept = keep_clicked_parts(mask, [Click(10, 10, True), Click(30, 30, False)])
    assert kept[5:15, 5:15].all() and not kept[25:35, 25:35].any()
    both = keep_clicked_parts(mask, [Click(10, 10, True), Click(30, 30, True)])
    assert np.array_equal(both, mask)
    missed = keep_clicked_parts(mask, [Click(20, 20, True)])  # the click hit no part
    assert np.array_equal(missed, mask)


def test_the_shipped_model_loads_and_outlines_a_drawn_lesion():
    from pathlib import Path

    from usgen_desktop.assist.model import is_assist_folder, load_model
    from usgen_desktop.assist.predict import segment

    folder = Path(__file__).resolve().parents[2] / "models" / "assist-default"
    if not is_assist_folder(folder):
        pytest.skip("models/assist-default is not in this checkout")
    model = load_model(folder)
    img, m = lesion_pair(120, 160)
    mask = segment(model, img, [Click(80, 60, True)])
    assert mask.shape == (120, 160) and mask[60, 80]
    assert iou(mask, m > 0) > 0.5  # a dark ellipse on speckle is the easy case


def test_object_box_expands_around_mask_and_clicks_and_gives_up_when_large():
    from usgen_desktop.assist.data import object_box

    m = np.zeros((200, 300), bool)
    m[70:130, 120:180] = True  # 60 x 60 object
    x0, y0, x1, y1 = object_box(m, expand=1.5, min_side=10)
    assert (x0, y0, x1, y1) == (105, 55, 195, 145)  # 90 x 90, centred on it
    # a click beyond the mask widens the box to hold it
    x0, _, x1, _ = object_box(m, [(260.0, 100.0)], expand=1.5, min_side=10)
    assert x0 <= 120 and x1 > 260
    # small objects get the minimum side (here 20 % of the longer side: 60 px)
    m[:] = False
    m[90:110, 140:160] = True
    x0, y0, x1, y1 = object_box(m, expand=1.0)
    assert x1 - x0 == 60 and y1 - y0 == 60
    big = np.ones((200, 300), bool)
    assert object_box(big) is None
    assert object_box(np.zeros((200, 300), bool)) is None


def test_zoom_crop_keeps_the_whole_object_inside_the_crop():
    from usgen_desktop.assist.data import zoom_crop

    rng = np.random.default_rng(0)
    img, m = lesion_pair(160, 200)
    s = Sample(img, m > 0, "x")
    for _ in range(20):
        c = zoom_crop(s, rng)
        assert c.image.shape == c.mask.shape
        assert c.image.shape[0] < 160 or c.image.shape[1] < 200
        assert c.mask.sum() == s.mask.sum()  # expand >= 1.25 and a shift <= 12 % keep it whole


def test_zoom_in_session_crops_after_the_first_click_and_undo_restores():
    from usgen_desktop.assist.model import AssistConfig, build_model
    from usgen_desktop.assist.predict import AssistSession

    torch.manual_seed(1)
    model = build_model(AssistConfig(**TINY, zoom_in=True)).eval()
    img, m = lesion_pair(120, 160)
    s = AssistSession(model, img, refine_first=False)
    assert s.zoom_in
    first = s.add_click(Click(80, 60, True))
    assert s._roi is None  # the first click sees the whole image
    forced = np.zeros_like(first)
    forced[50:70, 70:90] = True
    s._prev_image = forced  # a small answer: the next click zooms in on it
    second = s.add_click(Click(85, 62, True))
    x0, y0, x1, y1 = s._roi
    assert x0 <= 70 and x1 >= 90 and (x1 - x0) < 160
    outside = np.ones_like(second)
    outside[y0:y1, x0:x1] = False
    assert not second[outside].any()  # nothing is drawn outside the zoomed view
    back = s.undo_click()
    assert np.array_equal(back, forced) and s._roi is None and len(s.clicks) == 1
    # the same model without zoom-in keeps looking at the whole image
    plain = AssistSession(model, img, zoom_in=False)
    plain.add_click(Click(80, 60, True))
    plain._prev_image = forced
    plain.add_click(Click(85, 62, True))
    assert plain._roi is None


def test_refine_first_answers_the_first_click_again_on_the_crop_around_its_answer(tmp_path):
    import json

    from usgen_desktop.assist.data import object_box
    from usgen_desktop.assist.model import AssistConfig, build_model, load_model, save_model
    from usgen_desktop.assist.predict import AssistSession

    model = build_model(AssistConfig(**TINY, zoom_in=True, refine_first=True)).eval()
    img, _m = lesion_pair(120, 160)
    blob = np.zeros((120, 160), bool)
    blob[50:70, 70:90] = True  # what the whole-image look answers: a small lesion

    def scripted(session, whole_answer):
        """Replace the network: the whole image gives ``whole_answer``, a crop gives all-in."""
        calls = []

        def probabilities(clicks, prev, roi=None):
            calls.append((roi, prev.copy()))
            box, _grid, valid = session._view(roi)
            if roi is None:
                return box.image_to_grid(whole_answer.astype(np.float32)) * valid
            return valid.copy()

        session.probabilities = probabilities
        return calls

    s = AssistSession(model, img)
    assert s.refine_first
    calls = scripted(s, blob)
    first = s.add_click(Click(80, 60, True))
    assert [c[0] for c in calls][0] is None and len(calls) == 2  # whole image, then the crop
    roi = calls[1][0]
    assert roi == object_box(blob, [(80, 60)])
    assert calls[1][1].any()  # the crop's look starts from the whole image's answer
    x0, y0, x1, y1 = roi
    assert first[y0:y1, x0:x1].all() and first.sum() == (x1 - x0) * (y1 - y0)  # crop's answer
    s.add_click(Click(85, 62, True))
    assert len(calls) == 3  # later clicks look once
    s.undo_click()
    back = s.undo_click()
    assert not back.any() and s._roi is None and not s.clicks  # one click, one undo step
    # an answer that covers most of the image has no crop to look at: one look
    s2 = AssistSession(model, img)
    calls2 = scripted(s2, np.ones((120, 160), bool))
    s2.add_click(Click(80, 60, True))
    assert len(calls2) == 1
    # switched off, the first click looks once
    s3 = AssistSession(model, img, refine_first=False)
    calls3 = scripted(s3, blob)
    s3.add_click(Click(80, 60, True))
    assert len(calls3) == 1
    # the setting travels with the folder; a folder that does not name it looks once
    save_model(model, tmp_path / "m")
    assert load_model(tmp_path / "m").config.refine_first
    cfg = tmp_path / "m" / "usgen_model.json"
    raw = json.loads(cfg.read_text())
    del raw["refine_first"]
    cfg.write_text(json.dumps(raw))
    assert not load_model(tmp_path / "m").config.refine_first


def test_training_with_zoom_crops_marks_the_model_for_zoom_in(tmp_path):
    from usgen_desktop.assist.model import AssistConfig, load_model
    from usgen_desktop.assist.train import TrainOptions, train_assist

    train_assist(tiny_samples(), tmp_path / "z", TrainOptions(steps=2, batch=2, zoom_crops=1.0),
                 AssistConfig(**TINY))
    assert load_model(tmp_path / "z").config.zoom_in
    train_assist(tiny_samples(), tmp_path / "n", TrainOptions(steps=2, batch=2, zoom_crops=0.0),
                 AssistConfig(**TINY))
    assert not load_model(tmp_path / "n").config.zoom_in


def test_flip_average_answers_a_mirrored_image_with_the_mirrored_mask(tmp_path):
    from usgen_desktop.assist.model import AssistConfig, build_model, load_model, save_model
    from usgen_desktop.assist.predict import AssistSession

    torch.manual_seed(2)
    model = build_model(AssistConfig(**TINY, flip_average=True)).eval()
    img, _m = lesion_pair(60, 90)  # not square: the letterbox pads below, the mirror stays inside
    mirrored = np.ascontiguousarray(img[:, ::-1])
    clicks = [Click(30, 25, True), Click(70, 40, False)]
    flipped = [Click(89 - c.x, c.y, c.inside) for c in clicks]

    def probs(session, cl):
        box, _grid, valid = session._view(None)
        ih, iw = box.inner
        return session.probabilities(cl, np.zeros_like(valid))[:ih, :iw]

    a = probs(AssistSession(model, img), clicks)
    b = probs(AssistSession(model, mirrored), flipped)
    np.testing.assert_allclose(a, b[:, ::-1], atol=1e-5)  # equivariant by construction
    plain = AssistSession(model, img, flip_average=False)
    c = probs(plain, clicks)
    d = probs(AssistSession(model, mirrored, flip_average=False), flipped)
    assert np.abs(c - d[:, ::-1]).max() > 1e-3  # a random network alone is not
    np.testing.assert_allclose(a, 0.5 * (c + d[:, ::-1]), atol=1e-5)
    save_model(model, tmp_path / "m")
    assert load_model(tmp_path / "m").config.flip_average
