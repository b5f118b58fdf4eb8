"""The Generate panel and gallery, driven like a user would, against a fake backend.

The fake backend is registered in ``synthesis.request.BACKENDS`` for the test, so these tests
exercise the real ``run()``, the worker thread, the gallery and accept, without model weights.
"""

from __future__ import annotations

import sys
import time
import types

import numpy as np
import pytest

from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.core.tasks import Progress
from usgen_desktop.errors import Cancelled, ModelError, OutOfMemoryError

pytestmark = pytest.mark.gui


class FakeBackend:
    """Draws each label id as a grey level plus seeded noise, in ``steps`` steps."""

    name = "fake"
    model_hash = "fakehash"

    def __init__(self, request, delay: float = 0.0, fail: BaseException | None = None):
        self.device = request.device if request.device != "auto" else "cpu"
        self.steps_per_item = request.steps
        self.delay = delay
        self.fail = fail
        self.calls: list[int] = []

    def generate(self, label_map, klass, seed, request, map_index, step, cancel):
        if self.fail is not None and self.device != "cpu":
            raise self.fail
        rng = np.random.default_rng(seed)
        base = (label_map.data.astype(np.float32) * 60 + 40)
        for i in range(self.steps_per_item):
            if cancel.cancelled:
                raise Cancelled("stopped")
            if self.delay:
                time.sleep(self.delay)
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            step(Progress(i + 1, self.steps_per_item, "", img))
        self.calls.append(seed)
        return img


@pytest.fixture
def fake_backend(monkeypatch):
    """Registers the fake under every backend name; returns its settings to tweak per test."""
    from usgen_desktop.synthesis import request as req_mod

    settings = {"delay": 0.0, "fail": None, "loaded": []}
    mod = types.ModuleType("usgen_fake_backend")

    def load(request):
        if settings["fail"] is not None and isinstance(settings["fail"], ModelError) \
                and request.backend != "speckle":
            raise settings["fail"]
        b = FakeBackend(request, settings["delay"],
                        settings["fail"] if not isinstance(settings["fail"], ModelError) else None)
        settings["loaded"].append(request)
        return b

    mod.load = load
    monkeypatch.setitem(sys.modules, "usgen_fake_backend", mod)
    for name in list(req_mod.BACKENDS):
        monkeypatch.setitem(req_mod.BACKENDS, name, "usgen_fake_backend")
    return settings


class StubProject:
    def __init__(self, docs, schema):
        self.documents = list(docs)
        self.schema = schema


def make_window(docs):
    """A bare main window offering the API the real one promises to panels."""
    from PySide6.QtCore import Signal
    from PySide6.QtWidgets import QLabel, QMainWindow

    class StubWindow(QMainWindow):
        currentDocumentChanged = Signal(object)

        def __init__(self):
            super().__init__()
            self.project = StubProject(docs, docs[0].schema)
            self._current = docs[0]
            self.errors: list[str] = []
            self.canvas = QLabel("canvas")
            self.setCentralWidget(self.canvas)

        def current_document(self):
            return self._current

        def add_documents(self, new, select=True):
            self.project.documents.extend(new)

        def show_error(self, msg):
            self.errors.append(msg)

    return StubWindow()


def lesion_doc(name="case1", klass="benign", seed=0):
    from tests.conftest import lesion_pair

    img, mask = lesion_pair(48, 64, seed=seed)
    schema = load_preset("busi")
    return Document(labels=LabelMap((mask > 0).astype(np.uint8)), schema=schema,
                    image=UltrasoundImage(img), name=name, tags={"class": klass})


@pytest.fixture
def setup(qtbot, fake_backend):
    from usgen_desktop.gui.panels import generate

    docs = [lesion_doc("case1", "benign", 0), lesion_doc("case2", "malignant", 1)]
    window = make_window(docs)
    qtbot.addWidget(window)
    panel = generate.install(window)
    window.show()
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    return window, panel, docs, fake_backend


def use_fake_sdm(panel):
    """Pick the sdm backend with no model folder (the fake backend stands in for it)."""
    panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
    panel.model_dir.setText("")


def wait_done(qtbot, panel, timeout=10_000):
    qtbot.waitUntil(lambda: not panel.running, timeout=timeout)


def test_generate_fills_gallery_with_exact_label_maps(qtbot, setup):
    window, panel, docs, _ = setup
    panel.count.setValue(3)
    qtbot.mouseClick(panel.generate_button, __import__("PySide6.QtCore").QtCore.Qt.LeftButton)
    wait_done(qtbot, panel)
    items = list(panel.gallery.items.values())
    assert len(items) == 3
    for it in items:
        assert it.source is docs[0]
        assert it.result.label_map == docs[0].labels
        assert it.result.image.shape == docs[0].shape and it.result.image.dtype == np.uint8
    assert len({it.seed for it in items}) == 3  # each item its own seed
    # the compare view shows the selected item large: real, generated, label map
    assert panel.gallery.generated_pane.image() is not None
    assert panel.gallery.real_pane.image() is not None
    assert panel.preview.image() is not None  # the live preview got the denoising image
    assert not window.errors


def test_accept_creates_document_with_provenance(qtbot, setup):
    window, panel, docs, _ = setup
    panel.count.setValue(2)
    panel.seed.setValue(1234)
    panel.generate()
    wait_done(qtbot, panel)
    before = len(window.project.documents)
    item = next(iter(panel.gallery.items.values()))
    panel.gallery.select(item)
    with qtbot.waitSignal(panel.gallery.accepted, timeout=2000) as blocker:
        qtbot.mouseClick(panel.gallery.accept_button,
                         __import__("PySide6.QtCore").QtCore.Qt.LeftButton)
    doc = blocker.args[0]
    assert len(window.project.documents) == before + 1
    assert window.project.documents[-1] is doc
    assert doc.parent == docs[0].uid
    assert doc.tags.get("class") == "benign"
    assert doc.provenance["seed"] == item.seed and doc.provenance["base_seed"] == 1234
    assert doc.provenance["backend"] == "speckle"
    assert np.array_equal(doc.image.pixels, item.result.image)
    assert doc.labels == docs[0].labels and doc.labels.data is not docs[0].labels.data
    # accepting twice does not add a second copy
    panel.gallery.accept(item)
    assert len(window.project.documents) == before + 1


def test_scope_all_and_class_per_document(qtbot, setup):
    window, panel, docs, fake = setup
    panel.scope.setCurrentIndex(panel.scope.findData("all"))
    panel.count.setValue(1)
    panel.generate()
    wait_done(qtbot, panel)
    items = sorted(panel.gallery.items.values(), key=lambda i: i.result.index)
    assert [i.source.name for i in items] == ["case1", "case2"]
    assert [i.klass for i in items] == ["benign", "malignant"]
    assert fake["loaded"][-1].classes == ["benign", "malignant"]


def test_cancel_keeps_finished_images_and_thread_ends(qtbot, setup):
    window, panel, docs, fake = setup
    fake["delay"] = 0.02
    use_fake_sdm(panel)
    panel.steps.setValue(10)
    panel.count.setValue(50)
    handle = panel.generate()
    assert handle is not None
    qtbot.waitUntil(lambda: len(panel.gallery.items) >= 1, timeout=10_000)
    panel.cancel()
    with qtbot.waitSignal(handle.cancelled, timeout=5000) as blocker:
        pass
    assert handle.wait(5000) and handle.thread.isFinished()
    kept = blocker.args[0]
    assert 1 <= len(kept) < 50
    qtbot.wait(50)
    assert len(panel.gallery.items) == len(kept)
    wait_done(qtbot, panel)
    assert panel.generate_button.isEnabled()


def test_canvas_edits_during_generation_do_not_change_the_result(qtbot, setup):
    window, panel, docs, fake = setup
    fake["delay"] = 0.01
    use_fake_sdm(panel)
    panel.steps.setValue(5)
    panel.count.setValue(3)
    original = docs[0].labels.copy()
    panel.generate()
    docs[0].paint_disk((5, 5), 4, 1)  # the user keeps painting meanwhile
    wait_done(qtbot, panel)
    for it in panel.gallery.items.values():
        assert it.result.label_map == original


def test_out_of_memory_offers_the_cpu(qtbot, setup):
    window, panel, docs, fake = setup
    fake["fail"] = OutOfMemoryError("The GPU ran out of memory.")
    use_fake_sdm(panel)
    panel.steps.setValue(2)
    panel.count.setValue(1)
    if panel.device.findText("cuda") < 0:
        # Once torch is loaded (by earlier tests) the panel offers only this machine's real
        # devices; the test plays a CUDA machine, so offer it.
        panel.device.addItem("cuda")
    panel.device.setCurrentText("cuda")
    asked: list[str] = []
    panel.ask = lambda q: asked.append(q) or True
    panel.generate()
    qtbot.waitUntil(lambda: len(panel.gallery.items) == 1, timeout=10_000)
    assert asked and "Try again on the CPU?" in asked[0] and "out of memory" in asked[0]
    assert fake["loaded"][-1].device == "cpu"
    assert not window.errors


def test_missing_model_offers_speckle_or_shows_one_sentence(qtbot, setup):
    window, panel, docs, fake = setup
    fake["fail"] = ModelError("The sdm model folder holds no weights.")
    use_fake_sdm(panel)
    panel.ask = lambda q: False  # the user declines the fallback
    panel.generate()
    wait_done(qtbot, panel)
    qtbot.wait(50)
    assert not panel.gallery.items
    assert panel.preview._placeholder.startswith("nothing generated")  # not "waiting…"
    panel.ask = lambda q: True
    panel.generate()
    qtbot.waitUntil(lambda: len(panel.gallery.items) >= 1, timeout=10_000)
    assert fake["loaded"][-1].backend == "speckle"


def test_missing_model_folder_is_one_sentence(qtbot, setup, tmp_path):
    window, panel, docs, fake = setup
    panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
    panel.model_dir.setText(str(tmp_path / "nope"))
    assert panel.generate() is None
    assert window.errors and "does not exist" in window.errors[0]


def test_regenerate_replaces_item_with_new_seed(qtbot, setup):
    window, panel, docs, _ = setup
    panel.count.setValue(1)
    panel.generate()
    wait_done(qtbot, panel)
    (item,) = panel.gallery.items.values()
    old_seed = item.seed
    panel.gallery.select(item)
    qtbot.mouseClick(panel.gallery.regenerate_button,
                     __import__("PySide6.QtCore").QtCore.Qt.LeftButton)
    qtbot.waitUntil(lambda: item.seed != old_seed, timeout=10_000)
    wait_done(qtbot, panel)
    assert len(panel.gallery.items) == 1
    assert item.result.label_map == docs[0].labels


def test_reject_removes_item_and_its_empty_group(qtbot, setup):
    window, panel, docs, _ = setup
    panel.count.setValue(1)
    panel.generate()
    wait_done(qtbot, panel)
    assert panel.gallery.list.count() == 2  # label-map header + one result
    (item,) = panel.gallery.items.values()
    panel.gallery.select(item)
    panel.gallery.reject_selected()
    assert not panel.gallery.items
    assert panel.gallery.list.count() == 0


def test_nothing_open_is_one_sentence(qtbot, fake_backend):
    from usgen_desktop.gui.panels import generate

    window = make_window([lesion_doc()])
    window._current = None
    window.project.documents = []
    qtbot.addWidget(window)
    panel = generate.install(window)
    assert panel.generate() is None
    assert window.errors == ["Open or paint a label map first; there is nothing to generate from."]


def test_closing_the_window_mid_generation_is_clean(qtbot, fake_backend):
    """Quit while generating: the task is cancelled, the thread ends, nothing calls into
    destroyed widgets (pytest-qt fails the test on any exception raised in a slot)."""
    from usgen_desktop.gui.panels import generate
    from usgen_desktop.gui.worker import shutdown_all

    fake_backend["delay"] = 0.01
    window = make_window([lesion_doc()])
    panel = generate.install(window)
    use_fake_sdm(panel)
    panel.count.setValue(100)
    handle = panel.generate()
    qtbot.waitUntil(lambda: len(panel.gallery.items) >= 1, timeout=10_000)
    window.close()
    window.deleteLater()
    qtbot.wait(10)
    assert shutdown_all(5000)
    assert handle.thread.isFinished()
    qtbot.wait(100)  # deliver whatever the worker queued before it stopped


def test_settings_are_remembered(qtbot, fake_backend, tmp_path):
    from PySide6.QtCore import QSettings

    from usgen_desktop.gui.panels import generate

    model = tmp_path / "my-sdm"
    model.mkdir()
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    window = make_window([lesion_doc()])
    window.settings = settings
    qtbot.addWidget(window)
    panel = generate.install(window)
    panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
    panel.model_dir.setText(str(model))
    panel.count.setValue(2)
    panel.steps.setValue(7)
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)

    again = make_window([lesion_doc()])
    again.settings = settings
    qtbot.addWidget(again)
    panel2 = generate.install(again)
    assert panel2.backend_name == "sdm"
    assert panel2.model_dir.text() == str(model)
    assert panel2.count.value() == 2 and panel2.steps.value() == 7
    # switching away and back keeps each backend's own folder
    panel2.backend.setCurrentIndex(panel2.backend.findData("speckle"))
    assert not panel2.model_dir.isEnabled()
    panel2.backend.setCurrentIndex(panel2.backend.findData("sdm"))
    assert panel2.model_dir.text() == str(model)


def test_gallery_keys_accept_and_reject(qtbot, setup):
    from PySide6.QtCore import Qt

    window, panel, docs, _ = setup
    panel.count.setValue(2)
    panel.generate()
    wait_done(qtbot, panel)
    first, second = sorted(panel.gallery.items.values(), key=lambda i: i.result.index)
    n = len(window.project.documents)
    panel.gallery.select(first)
    panel.gallery.list.setFocus()
    qtbot.keyClick(panel.gallery.list, Qt.Key.Key_A)
    assert first.status == "accepted" and len(window.project.documents) == n + 1
    panel.gallery.select(second)
    qtbot.keyClick(panel.gallery.list, Qt.Key.Key_R)
    assert list(panel.gallery.items.values()) == [first]


def test_inpaint_sends_the_real_image_and_the_grown_region(qtbot, setup):
    window, panel, docs, fake = setup
    use_fake_sdm(panel)
    assert not panel.inpaint.isHidden()
    panel.inpaint.setChecked(True)
    panel.margin.setValue(3)
    panel.count.setValue(1)
    panel.generate()
    wait_done(qtbot, panel)
    req = fake["loaded"][-1]
    doc = docs[0]
    assert np.array_equal(req.init_images[0], doc.image.to_uint8())
    region = req.inpaint_masks[0] > 0
    lesion = doc.labels.data > 0
    assert region[lesion].all()  # the whole lesion may change...
    assert region.sum() > lesion.sum()  # ...plus a margin around it...
    assert not region[0, 0] and region.mean() < 0.5  # ...but not the rest of the scan
    # speckle ignores the option (and hides it)
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    assert panel.inpaint.isHidden()
    panel.generate()
    wait_done(qtbot, panel)
    assert fake["loaded"][-1].inpaint_masks is None


def test_inpaint_without_an_image_is_one_sentence(qtbot, setup):
    window, panel, docs, fake = setup
    docs[0].image = None
    use_fake_sdm(panel)
    panel.inpaint.setChecked(True)
    assert panel.generate() is None
    assert "has no image to keep" in window.errors[-1]


def test_backend_settings_reach_the_request(qtbot, setup):
    window, panel, docs, fake = setup
    panel.probe.setCurrentIndex(panel.probe.findData("curvilinear"))
    panel.frequency.setValue(5.0)
    panel.count.setValue(1)
    panel.generate()
    wait_done(qtbot, panel)
    assert fake["loaded"][-1].params == {"probe": "curvilinear", "frequency_mhz": 5.0}
    panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
    assert panel.probe.isHidden() and not panel.sampler.isHidden()
    panel.model_dir.setText("")
    panel.sampler.setCurrentIndex(panel.sampler.findData("ddim"))
    panel.generate()
    wait_done(qtbot, panel)
    assert fake["loaded"][-1].params == {"sampler": "ddim"}


def test_real_speckle_backend_through_the_panel(qtbot):
    """No fake: the shipped speckle simulator, as a user would run it."""
    pytest.importorskip("usgen_desktop.synthesis.backends.speckle")
    from usgen_desktop.gui.panels import generate

    doc = lesion_doc("real", "malignant", 3)
    window = make_window([doc])
    qtbot.addWidget(window)
    panel = generate.install(window)
    # the simulator, picked as a user would (with a shipped model the panel starts on sdm)
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    panel.count.setValue(2)
    panel.seed.setValue(7)
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    assert not window.errors
    items = sorted(panel.gallery.items.values(), key=lambda i: i.result.index)
    assert len(items) == 2
    a, b = (np.asarray(i.result.image) for i in items)
    assert a.shape == doc.shape and a.dtype == np.uint8
    assert not np.array_equal(a, b)  # two seeds, two images
    lesion = doc.labels.data > 0
    assert a[lesion].mean() < a[~lesion].mean()  # the malignant lesion is darker
    new = panel.gallery.accept(items[0])
    assert new.provenance["backend"] == "speckle" and new.provenance["base_seed"] == 7


def test_switching_to_sdm_takes_the_models_recommended_guidance(qtbot, setup, tmp_path):
    import json

    window, panel, docs, fake = setup
    model = tmp_path / "model"
    model.mkdir()
    (model / "usgen_model.json").write_text(json.dumps(
        {"kind": "sdm", "recommended": {"guidance": 3.0, "steps": 12}}))
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    panel._model_dirs["sdm"] = str(model)
    panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
    assert panel.guidance.value() == 3.0 and panel.steps.value() == 12


# -- the first choice: the shipped model for the document's schema, else speckle ---------------
def hc18_doc(name="head1"):
    schema = load_preset("hc18")
    data = np.zeros((48, 64), np.uint8)
    data[8:40, 8:56] = 1
    data[18:30, 20:44] = 2
    return Document(labels=LabelMap(data), schema=schema, name=name)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A models folder with a shipped BUSI model (recommending 3.0 / 12 steps); returns it."""
    from tests.unit.test_shipped_model import write_model

    root = tmp_path / "models"
    write_model(root / "sdm-default", "busi", recommended={"guidance": 3.0, "steps": 12})
    monkeypatch.setenv("USGEN_MODELS", str(root))
    return root


def panel_for(qtbot, docs, settings=None):
    from usgen_desktop.gui.panels import generate

    window = make_window(docs)
    if settings is not None:
        window.settings = settings
    qtbot.addWidget(window)
    return window, generate.install(window)


def open_doc(window, doc):
    window._current = doc
    window.currentDocumentChanged.emit(doc)


def test_first_start_uses_the_shipped_model_with_its_recommendations(qtbot, shipped):
    window, panel = panel_for(qtbot, [lesion_doc()])
    assert panel.backend_name == "sdm"
    assert panel.model_dir.text() == str(shipped / "sdm-default")
    assert panel.guidance.value() == 3.0 and panel.steps.value() == 12


def test_first_start_without_a_model_for_the_schema_is_speckle(qtbot, shipped):
    window, panel = panel_for(qtbot, [hc18_doc()])
    assert panel.backend_name == "speckle"
    (shipped / "sdm-default" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    window, panel = panel_for(qtbot, [lesion_doc()])  # a model without weights: none either
    assert panel.backend_name == "speckle"


def test_another_schema_switches_the_shipped_model_or_to_speckle(qtbot, shipped):
    from tests.unit.test_shipped_model import write_model

    busi, head = lesion_doc(), hc18_doc()
    window, panel = panel_for(qtbot, [busi, head])
    assert panel.backend_name == "sdm"
    open_doc(window, head)  # no HC18 model: the simulator
    assert panel.backend_name == "speckle"
    open_doc(window, busi)
    assert (panel.backend_name, panel.model_dir.text()) == ("sdm", str(shipped / "sdm-default"))
    hc18 = write_model(shipped / "sdm-hc18", "hc18", recommended={"guidance": 2.0, "steps": 9})
    open_doc(window, head)  # now there is one: its own model and settings
    assert (panel.backend_name, panel.model_dir.text()) == ("sdm", str(hc18))
    assert panel.guidance.value() == 2.0 and panel.steps.value() == 9


def test_a_model_or_backend_the_user_picked_is_never_overridden(qtbot, shipped, tmp_path):
    from tests.unit.test_shipped_model import write_model

    busi, head = lesion_doc(), hc18_doc()
    mine = write_model(tmp_path / "mine", "busi")
    window, panel = panel_for(qtbot, [busi, head])
    qtbot.keyClicks(panel.model_dir, "x")  # typed by the user
    panel.model_dir.setText(str(mine))
    open_doc(window, head)
    assert (panel.backend_name, panel.model_dir.text()) == ("sdm", str(mine))
    # a backend picked by hand stays too
    window, panel = panel_for(qtbot, [busi, head])
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    open_doc(window, head)
    open_doc(window, busi)
    assert panel.backend_name == "speckle"


def test_saved_settings_are_the_users_choice(qtbot, shipped, fake_backend, tmp_path):
    from PySide6.QtCore import QSettings

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    window, panel = panel_for(qtbot, [lesion_doc()], settings)
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    panel.count.setValue(1)
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)
    window, panel = panel_for(qtbot, [lesion_doc()], settings)
    assert panel.backend_name == "speckle"  # saved by hand: no shipped model overrides it


def test_an_automatic_choice_stays_automatic_after_a_restart(qtbot, shipped, fake_backend,
                                                              tmp_path):
    from PySide6.QtCore import QSettings

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    window, panel = panel_for(qtbot, [lesion_doc()], settings)
    panel.steps.setValue(5)
    panel.count.setValue(1)
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)
    assert fake_backend["loaded"][-1].model_dir == str(shipped / "sdm-default")
    assert not settings.value("generate/model_dir/sdm")  # not remembered as the user's folder
    head = hc18_doc()
    window, panel = panel_for(qtbot, [lesion_doc(), head], settings)
    assert (panel.backend_name, panel.model_dir.text()) == ("sdm", str(shipped / "sdm-default"))
    assert panel.steps.value() == 5  # the same model as last time: its saved settings stay
    open_doc(window, head)
    assert panel.backend_name == "speckle"  # still the panel's choice, so it follows the schema


def test_the_class_row_shows_only_for_a_schema_with_classes(qtbot):
    busi, head = lesion_doc(), hc18_doc()
    window, panel = panel_for(qtbot, [busi, head])
    label = panel._form.labelForField(panel.klass)
    assert not panel.klass.isHidden() and not label.isHidden()
    open_doc(window, head)  # HC18 has no classes: nothing to choose
    assert panel.klass.isHidden() and label.isHidden()
    open_doc(window, busi)
    assert not panel.klass.isHidden()


def test_guidance_says_what_it_costs(setup):
    panel = setup[1]
    panel.guidance.setValue(1.0)
    assert panel.guidance.suffix() == ""
    panel.guidance.setValue(2.0)
    assert "1.9x" in panel.guidance.suffix() and "1.9x" in panel.guidance.toolTip()
