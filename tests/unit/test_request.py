"""The generation request API: seeds per item, shards, cancel, progress, provenance."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.core.tasks import CancelToken, Progress
from usgen_desktop.errors import UsgenError
from usgen_desktop.synthesis import request as req_mod
from usgen_desktop.synthesis.request import GenerationRequest, run, seed_for


@pytest.fixture
def fake_backend(monkeypatch):
    """A backend whose image encodes its seed, with 3 sampler steps per image."""
    calls: list[int] = []

    class Fake:
        name, model_hash, device, steps_per_item = "fake", "abc123", "cpu", 3

        def generate(self, label_map, klass, seed, request, map_index, step, cancel):
            for k in range(3):
                cancel.raise_if_cancelled()
                step(Progress(k + 1, 3, "step"))
            calls.append(seed)
            return np.full(label_map.shape, seed % 251, np.uint8)

    module = types.ModuleType("fake_backend_mod")
    module.load = lambda request: Fake()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_backend_mod", module)
    monkeypatch.setitem(req_mod.BACKENDS, "fake", "fake_backend_mod")
    return calls


def _maps(n: int = 2) -> list[LabelMap]:
    out = []
    for i in range(n):
        d = np.zeros((16, 20), np.uint8)
        d[4:8 + i, 5:10] = 1
        out.append(LabelMap(d))
    return out


def test_seed_for_is_stable_and_spread():
    assert seed_for(0, 5) == seed_for(0, 5)
    seeds = {seed_for(0, i) for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert seed_for(1, 0) != seed_for(0, 1)


def test_items_map_to_label_maps_and_repeats(fake_backend):
    r = GenerationRequest(_maps(2), load_preset("busi"), backend="fake", count=3, seed=4,
                          classes=["benign", "malignant"])
    results = run(r)
    assert [x.index for x in results] == list(range(6))
    assert [x.source_index for x in results] == [0, 0, 0, 1, 1, 1]
    assert [x.provenance["repeat"] for x in results] == [0, 1, 2, 0, 1, 2]
    assert [x.provenance["seed"] for x in results] == [seed_for(4, i) for i in range(6)]
    assert results[4].provenance["class"] == "malignant"
    assert results[4].label_map == r.label_maps[1]
    for key in ("backend", "model_hash", "device", "params", "time", "steps"):
        assert key in results[0].provenance


def test_a_shard_makes_exactly_its_items(fake_backend):
    schema = load_preset("busi")
    whole = run(GenerationRequest(_maps(2), schema, backend="fake", count=2, seed=9))
    part = run(GenerationRequest(_maps(2), schema, backend="fake", count=2, seed=9, items=[3, 1]))
    assert [x.index for x in part] == [3, 1]
    for x in part:
        assert np.array_equal(x.image, whole[x.index].image)


def test_progress_counts_steps_and_ends_complete(fake_backend):
    seen: list[Progress] = []
    run(GenerationRequest(_maps(2), load_preset("busi"), backend="fake"), seen.append)
    dones = [p.done for p in seen]
    assert dones == sorted(dones) and seen[-1].done == seen[-1].total == 6
    assert isinstance(seen[-1].preview, np.ndarray)  # the finished image, for the GUI


def test_cancel_keeps_finished_items(fake_backend):
    cancel = CancelToken()
    kept = []

    def on_result(res):
        kept.append(res.index)
        if len(kept) == 2:
            cancel.cancel()

    results = run(GenerationRequest(_maps(2), load_preset("busi"), backend="fake", count=3),
                  cancel=cancel, on_result=on_result)
    assert [x.index for x in results] == kept == [0, 1]


def test_cancel_mid_image_stops_within_a_step(fake_backend):
    cancel = CancelToken()

    def progress(p: Progress) -> None:
        if p.done == 4:  # the second step of the second image
            cancel.cancel()

    results = run(GenerationRequest(_maps(2), load_preset("busi"), backend="fake"), progress,
                  cancel)
    assert len(results) == 1 and len(fake_backend) == 1


def test_resize_is_nearest_neighbour(fake_backend):
    r = GenerationRequest(_maps(1), load_preset("busi"), backend="fake", size=(32, 40))
    res = run(r)[0]
    assert res.image.shape == (32, 40) and res.label_map.shape == (32, 40)
    assert set(res.label_map.ids()) == {0, 1}


@pytest.mark.parametrize("kw, words", [
    ({"backend": "nope"}, "Unknown backend"),
    ({"count": 0}, "at least 1"),
    ({"steps": 0}, "steps"),
    ({"strength": 2.0}, "Strength"),
    ({"classes": ["benign"]}, "one class per label map"),
])
def test_bad_requests_name_the_problem(kw, words):
    r = GenerationRequest(_maps(2), load_preset("busi"), **kw)
    with pytest.raises(UsgenError, match=words):
        r.validate()
    with pytest.raises(UsgenError):
        GenerationRequest([], load_preset("busi")).validate()


def test_speckle_through_run_is_deterministic():
    schema = load_preset("busi")
    a = run(GenerationRequest(_maps(1), schema, seed=1, count=2))
    b = run(GenerationRequest(_maps(1), schema, seed=1, count=2))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, a[1].image)
    assert a[0].provenance["backend"] == "speckle" and a[0].image.dtype == np.uint8


def test_a_backend_missing_from_the_install_is_one_sentence(monkeypatch):
    monkeypatch.setitem(req_mod.BACKENDS, "ghost", "usgen_desktop.synthesis.backends.ghost")
    with pytest.raises(UsgenError, match="'ghost' backend is not part of this installation"):
        run(GenerationRequest(_maps(1), load_preset("busi"), backend="ghost"))


def test_model_recommendations_read_from_the_model_folder(tmp_path):
    import json

    from usgen_desktop.synthesis.request import model_recommendations

    (tmp_path / "usgen_model.json").write_text(json.dumps({"recommended": {"guidance": 3.0}}))
    assert model_recommendations(str(tmp_path)) == {"guidance": 3.0}
    assert model_recommendations(str(tmp_path / "missing")) == {}
    assert model_recommendations(None) == {}
