"""The Train panel: live loss curve and samples, cancel keeps the checkpoint, resume hint."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from usgen_desktop.core.tasks import Progress
from usgen_desktop.errors import Cancelled

pytestmark = pytest.mark.gui


@dataclasses.dataclass
class FakeResult:
    model_dir: object
    step: int
    cancelled: bool = False


@pytest.fixture
def fake_trainer(monkeypatch):
    """Replace train_sdm by a quick fake with the same contract; returns what it saw."""
    from usgen_desktop.synthesis.training import sdm as trainer

    seen: dict = {"delay": 0.0}

    def fake_train_sdm(data, out_dir, config=None, progress=None, cancel=None, on_sample=None,
                       schema=None, classes=None, resume=False, info=None, init_from=None):
        seen.update(data=list(data), out_dir=out_dir, config=config, resume=resume,
                    schema=schema, init_from=init_from)
        step = 0
        progress(Progress(0, config.steps, "starting", {"loss": None, "step": 0}))
        while step < config.steps:
            if cancel.cancelled:
                return FakeResult(out_dir, step, cancelled=True)
            if seen["delay"]:
                time.sleep(seen["delay"])
            step += 1
            loss = 1.0 / step
            sample = None
            if config.sample_every and step % config.sample_every == 0:
                sample = np.full((16, 32), step % 256, np.uint8)
                on_sample(step, sample)
            progress(Progress(step, config.steps, f"step {step}",
                              {"loss": loss, "step": step, "sample": sample}))
        return FakeResult(out_dir, step)

    monkeypatch.setattr(trainer, "train_sdm", fake_train_sdm)
    return seen


def make_window(with_images=True):
    from PySide6.QtWidgets import QLabel, QMainWindow

    from tests.gui.test_generate_panel import StubProject, lesion_doc

    docs = [lesion_doc("a", "benign", 0), lesion_doc("b", "malignant", 1)]
    synthetic = lesion_doc("synth", "benign", 2)
    synthetic.provenance = {"backend": "speckle"}
    docs.append(synthetic)
    if not with_images:
        for d in docs:
            d.image = None

    class StubWindow(QMainWindow):
        def __init__(self):
            super().__init__()
            self.project = StubProject(docs, docs[0].schema)
            self.errors: list[str] = []
            self.setCentralWidget(QLabel("canvas"))

        def current_document(self):
            return docs[0]

        def show_error(self, msg):
            self.errors.append(msg)

    return StubWindow()


def test_train_on_project_draws_loss_and_samples(qtbot, fake_trainer, tmp_path):
    from usgen_desktop.gui.panels import train

    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.out_dir.setText(str(tmp_path / "model"))
    panel.steps.setValue(300)
    panel.sample_every.setValue(100)
    handle = panel.train()
    assert handle is not None
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    qtbot.waitUntil(lambda: panel.train_button.isEnabled(), timeout=5000)
    # every step's loss reached the plot, although progress signals are throttled
    steps, losses = panel.plot.history.snapshot()
    assert len(losses) == 300 and steps[-1] == 300
    assert losses[0] > losses[-1]
    assert panel.samples.image() is not None and "300" in panel.samples.caption
    # trained on the real annotated images only, never on generated ones
    assert len(fake_trainer["data"]) == 2
    assert fake_trainer["config"].steps == 300 and fake_trainer["config"].sample_every == 100
    assert panel.use_button.isEnabled()
    assert not window.errors


def test_cancel_stops_within_a_step_and_keeps_result(qtbot, fake_trainer, tmp_path):
    from usgen_desktop.gui.panels import train

    fake_trainer["delay"] = 0.01
    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.out_dir.setText(str(tmp_path / "model"))
    panel.steps.setValue(100_000)
    handle = panel.train()
    qtbot.waitUntil(lambda: len(panel.plot.history) >= 3, timeout=10_000)
    panel.cancel()
    with qtbot.waitSignal(handle.cancelled, timeout=5000) as blocker:
        pass
    assert handle.wait(5000) and handle.thread.isFinished()
    result = blocker.args[0]
    assert result.cancelled and 3 <= result.step < 100_000
    assert abs(len(panel.plot.history) - result.step) <= 1


def test_errors_are_one_sentence(qtbot, fake_trainer, tmp_path):
    from usgen_desktop.gui.panels import train

    window = make_window(with_images=False)
    qtbot.addWidget(window)
    panel = train.install(window)
    assert panel.train() is None
    assert window.errors == ["Choose a folder for the model first."]
    panel.out_dir.setText(str(tmp_path / "m"))
    assert panel.train() is None
    assert "no annotated real images" in window.errors[-1]
    panel.source.setCurrentIndex(panel.source.findData(train.FOLDER_SOURCE))
    assert panel.train() is None
    assert window.errors[-1] == "Choose the dataset folder to train on."


def test_loss_plot_paints_many_points(qtbot):
    from usgen_desktop.gui.loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(300, 160)
    n = 50_000
    steps = np.arange(1, n + 1)
    plot.set_points(steps, 1.0 / np.sqrt(steps) + 0.01 * np.random.default_rng(0).random(n))
    img = plot.grab().toImage()
    assert img.width() == 300
    # something was drawn inside the plot area besides the background
    colors = {img.pixel(x, y) for x in range(60, 290, 7) for y in range(10, 130, 7)}
    assert len(colors) > 2
    plot.set_log_y(False)
    plot.grab()


def test_real_trainer_few_steps_and_resume(qtbot, tmp_path, monkeypatch):
    """A tiny real sdm run through the panel: cancel keeps a checkpoint; resume continues."""
    from usgen_desktop.gui.panels import train

    real_make_config = train.make_config

    def tiny(job):
        cfg = real_make_config(job)
        return dataclasses.replace(cfg, block_out_channels=(8, 16), layers_per_block=1,
                                   norm_num_groups=4, attention_head_dim=4, sample_steps=2,
                                   checkpoint_every=2, warmup=1)

    monkeypatch.setattr(train, "make_config", tiny)
    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    out = tmp_path / "model"
    panel.out_dir.setText(str(out))
    panel.size.setCurrentIndex(panel.size.findData(64))
    panel.batch.setValue(2)
    panel.steps.setValue(4)
    panel.sample_every.setValue(4)
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=60_000):
        pass
    assert handle.result.step == 4
    assert len(panel.plot.history) == 4
    assert panel.samples.image() is not None
    qtbot.waitUntil(lambda: panel.train_button.isEnabled(), timeout=5000)
    # the folder now holds a run: the panel says so and ticks Resume
    panel.resume.setChecked(False)
    panel._check_out_dir()
    assert panel.resume.isChecked() and "step 4" in panel.resume_hint.text()
    panel.steps.setValue(6)
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=60_000):
        pass
    assert handle.result.step == 6
    assert not window.errors


def test_cancelled_raise_is_reported_as_cancel(qtbot, monkeypatch, tmp_path):
    from usgen_desktop.gui.panels import train
    from usgen_desktop.synthesis.training import sdm as trainer

    def stops(*a, **k):
        raise Cancelled("stopped")

    monkeypatch.setattr(trainer, "train_sdm", stops)
    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.out_dir.setText(str(tmp_path / "m"))
    handle = panel.train()
    with qtbot.waitSignal(handle.cancelled, timeout=5000):
        pass
    qtbot.waitUntil(lambda: panel.train_button.isEnabled(), timeout=5000)
    assert not window.errors


def test_train_settings_are_remembered(qtbot, fake_trainer, tmp_path):
    from PySide6.QtCore import QSettings

    from usgen_desktop.gui.panels import train

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    window = make_window()
    window.settings = settings
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.out_dir.setText(str(tmp_path / "model"))
    panel.size.setCurrentIndex(panel.size.findData(64))
    panel.steps.setValue(5)
    panel.batch.setValue(3)
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    again = make_window()
    again.settings = settings
    qtbot.addWidget(again)
    panel2 = train.install(again)
    assert panel2.out_dir.text() == str(tmp_path / "model")
    assert panel2.size.currentData() == 64
    assert panel2.steps.value() == 5 and panel2.batch.value() == 3


def test_train_on_a_dataset_folder(qtbot, fake_trainer, tmp_path):
    import cv2

    from tests.conftest import lesion_pair
    from usgen_desktop.gui.panels import train

    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "masks").mkdir(parents=True)
    for i in range(3):
        img, mask = lesion_pair(40, 48, seed=i)
        cv2.imwrite(str(tmp_path / "ds" / "images" / f"c{i}.png"), img)
        cv2.imwrite(str(tmp_path / "ds" / "masks" / f"c{i}.png"), mask)
    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.source.setCurrentIndex(panel.source.findData(train.FOLDER_SOURCE))
    panel.dataset.setText(str(tmp_path / "ds"))
    panel.out_dir.setText(str(tmp_path / "model"))
    panel.steps.setValue(3)
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    assert len(fake_trainer["data"]) == 3  # the folder's pairs, not the project's
    assert fake_trainer["data"][0][0].shape == (40, 48)


def test_finished_run_says_where_the_model_is(qtbot, fake_trainer, tmp_path):
    from usgen_desktop.gui.panels import train

    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.out_dir.setText(str(tmp_path / "model"))
    panel.steps.setValue(3)
    panel.train()
    qtbot.waitUntil(lambda: panel.train_button.isEnabled(), timeout=10_000)
    text = panel.progress.message.text()
    assert "Model saved in" in text and str(tmp_path / "model") in text and "step 3" in text


def test_tick_labels_stay_distinct():
    from usgen_desktop.gui.loss_plot import tick_labels

    labels = tick_labels([0.7719, 0.7717, 0.7715, 0.7713, 0.7711])
    assert len(set(labels)) == 5
    assert tick_labels([1.0, 0.5, 0.25]) == ["1", "0.5", "0.25"]


def test_fine_tune_starts_from_the_shipped_model_for_the_labels(qtbot, fake_trainer, tmp_path,
                                                                monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from usgen_desktop.gui.panels import train
    from usgen_desktop.paths import models_dir

    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.out_dir.setText(str(tmp_path / "tuned"))
    panel.steps.setValue(3)
    assert panel.size.isEnabled()
    panel.start_from.setCurrentIndex(panel.start_from.findData(train.SHIPPED_START))
    assert not panel.size.isEnabled()  # the model's own size is kept
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    # the project's labels are BUSI's: the shipped BUSI model is the start
    assert fake_trainer["init_from"] == str(models_dir() / "sdm-default")
    assert not window.errors
    qtbot.waitUntil(lambda: panel.train_button.isEnabled(), timeout=5000)

    # "Another model folder…": the chosen folder becomes an entry; a cancelled dialog goes back
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: "")
    panel.start_from.setCurrentIndex(panel.start_from.findData(train.PICK_START))
    assert panel.start_from.currentData() == train.SHIPPED_START
    mine = tmp_path / "my_model"
    mine.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(mine))
    panel.start_from.setCurrentIndex(panel.start_from.findData(train.PICK_START))
    assert panel.start_from.currentData() == str(mine)
    assert panel.start_from.currentText() == "my_model"
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    assert fake_trainer["init_from"] == str(mine)
    qtbot.waitUntil(lambda: panel.train_button.isEnabled(), timeout=5000)

    # random weights again: nothing to start from, and the size is the user's to choose
    panel.start_from.setCurrentIndex(0)
    assert panel.size.isEnabled()
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    assert fake_trainer["init_from"] is None


def test_fine_tune_without_a_shipped_model_is_one_sentence(qtbot, fake_trainer, tmp_path):
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.gui.panels import train

    window = make_window()
    window.project.schema = load_preset("echo")  # no shipped model draws hearts
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.out_dir.setText(str(tmp_path / "tuned"))
    panel.start_from.setCurrentIndex(panel.start_from.findData(train.SHIPPED_START))
    handle = panel.train()
    with qtbot.waitSignal(handle.ended, timeout=10_000):
        pass
    qtbot.waitUntil(lambda: bool(window.errors), timeout=5000)
    assert "No shipped model was made for the echo labels" in window.errors[-1]
    assert "data" not in fake_trainer  # the trainer never ran


def test_texture_refiner_trains_into_a_whole_model_folder(qtbot, tmp_path):
    """Train kind "Texture refiner": the model folder gets a copy of the base sdm model plus the
    new refiner/, and Generate then records the refiner."""
    import torch

    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.gui.panels import train
    from usgen_desktop.synthesis.backends.sdm import SdmConfig, build_unet, save_model

    torch.manual_seed(0)
    cfg = SdmConfig(size=(16, 16), schema=load_preset("busi"),
                    classes=["normal", "benign", "malignant"])
    base = tmp_path / "base"
    save_model(build_unet(cfg, block_out_channels=(8, 16), norm_num_groups=4,
                          attention_head_dim=4), cfg, base)
    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    panel.kind.setCurrentIndex(panel.kind.findData("refiner"))
    assert panel.start_from.isVisibleTo(panel) and panel.sample_every.isVisibleTo(panel)
    at = panel.start_from.count() - 1
    panel.start_from.insertItem(at, "base", str(base))
    panel.start_from.setCurrentIndex(at)
    out = tmp_path / "mine"
    panel.out_dir.setText(str(out))
    panel.size.setCurrentIndex(panel.size.findData(64))
    panel.steps.setValue(2)
    panel.batch.setValue(2)
    panel.sample_every.setValue(2)
    handle = panel.train()
    assert handle is not None
    with qtbot.waitSignal(handle.finished, timeout=120_000):
        pass
    assert not window.errors
    assert panel.samples.image() is not None  # enlarged | refined | real crops
    assert (out / "usgen_model.json").is_file() and (out / "unet").is_dir()
    assert (out / "refiner" / "usgen_model.json").is_file()
    # the new pair's texture gain was calibrated on the project's labelled images
    import json

    ref_cfg = json.loads((out / "refiner" / "usgen_model.json").read_text())
    cal = ref_cfg["training"]["calibration"]
    assert cal["maps"] == 2 and ref_cfg["recommended"]["gain"] == cal["gain"]
    assert 0.8 <= cal["gain"] <= 2.0 and len(cal["finest_octave_ratio"]) > 10
    assert handle.result.step == 2 and handle.result.model_dir == out
    assert len(panel.plot.history) == 2

    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.synthesis.request import GenerationRequest, run

    lab = np.zeros((40, 56), np.uint8)
    lab[10:20, 10:30] = 1
    res = run(GenerationRequest([LabelMap(lab)], load_preset("busi"), backend="sdm",
                                model_dir=str(out), classes=["benign"], steps=2, device="cpu"))
    assert len(res[0].provenance["refiner_hash"]) == 16
    assert res[0].provenance["refiner_gain"] == cal["gain"]


def test_all_gpus_choice_launches_torchrun_and_hides_without_gpus(qtbot, tmp_path, monkeypatch):
    """'GPUs: All (N)' appears only with more than one GPU, runs the launcher with N processes
    on a dataset folder, and refuses a batch that does not split or the project source."""
    from usgen_desktop.gui.panels import train
    from usgen_desktop.synthesis.training import launch

    monkeypatch.setattr(train, "gpu_count", lambda: 1)
    window = make_window()
    qtbot.addWidget(window)
    one = train.install(window)
    assert one.gpus.isHidden() and one.gpus.count() == 1

    seen: dict = {}

    def fake_launched(nproc, args, out_dir, progress, cancel, on_sample=None, env=None):
        seen.update(nproc=nproc, args=list(args), out_dir=out_dir)
        for step in (1, 2):
            progress(Progress(step, 2, f"step {step}", {"loss": 1.0 / step, "step": step}))
        return FakeResult(out_dir, 2)

    monkeypatch.setattr(launch, "train_sdm_launched", fake_launched)
    monkeypatch.setattr(train, "gpu_count", lambda: 4)
    window = make_window()
    qtbot.addWidget(window)
    panel = train.install(window)
    assert not panel.gpus.isHidden() and panel.gpus.itemText(1) == "All (4)"
    panel.gpus.setCurrentIndex(1)
    panel.out_dir.setText(str(tmp_path / "model"))
    panel.batch.setValue(8)
    assert panel.train() is None  # the project's images: the processes read a folder
    assert "dataset folder" in window.errors[-1]
    (tmp_path / "ds").mkdir()
    panel.source.setCurrentIndex(panel.source.findData(train.FOLDER_SOURCE))
    panel.dataset.setText(str(tmp_path / "ds"))
    panel.batch.setValue(6)
    assert panel.train() is None
    assert "multiple of 4" in window.errors[-1]
    panel.batch.setValue(8)
    handle = panel.train()
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    assert seen["nproc"] == 4 and seen["out_dir"] == tmp_path / "model"
    a = seen["args"]
    assert a[a.index("--data") + 1] == str(tmp_path / "ds") and a[a.index("--batch") + 1] == "8"
    assert panel.plot.history.snapshot()[0][-1] == 2
