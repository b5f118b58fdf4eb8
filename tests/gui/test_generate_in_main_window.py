"""The Generate and Train docks inside the real main window (not a stub)."""

from __future__ import annotations

import numpy as np
import pytest

# the fake backend fixture is shared with the panel tests
from tests.gui.test_generate_panel import fake_backend  # noqa: F401

pytestmark = pytest.mark.gui


@pytest.fixture
def main_window(qtbot, tmp_path, fake_backend):  # noqa: F811
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.io.project import Project

    try:
        from usgen_desktop.gui.main_window import MainWindow
    except ImportError:
        pytest.skip("the main window is not built")
    from tests.gui.test_generate_panel import lesion_doc
    from usgen_desktop.gui.panels.generate import GeneratePanel

    project = Project.create(tmp_path / "proj", load_preset("busi"), name="t")
    project.add([lesion_doc("case1", "benign", 0)])
    window = MainWindow(project)
    window.ask_save_changes = lambda: "discard"  # teardown closes it; never block on a dialog
    window.show_error = lambda msg: pytest.fail(f"error dialog: {msg}")
    qtbot.addWidget(window)
    window.show()
    # these tests mean the simulator (a shipped model would make sdm the first choice)
    panel = window.findChild(GeneratePanel)
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    return window


def test_docks_installed_and_accept_adds_to_project(qtbot, main_window):
    from PySide6.QtWidgets import QDockWidget

    from usgen_desktop.gui.panels.generate import GeneratePanel
    from usgen_desktop.gui.panels.train import TrainPanel

    w = main_window
    assert not w.panel_errors
    panel = w.findChild(GeneratePanel)
    assert panel is not None and w.findChild(TrainPanel) is not None
    gallery_dock = w.findChild(QDockWidget, "GalleryDock")
    assert not gallery_dock.isVisible()  # no results yet
    panel.count.setValue(2)
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)
    assert len(panel.gallery.items) == 2
    assert gallery_dock.isVisible()  # shown when the first result came
    source = w.current_document()
    n = len(w.project.documents)
    docs = panel.gallery.accept_all()
    assert len(docs) == 2 and len(w.project.documents) == n + 2
    for d in docs:
        assert d.parent == source.uid and d.provenance["backend"] == "speckle"
        assert np.array_equal(d.labels.data, source.labels.data)
    # the editor keeps showing the source; the new pairs are listed, not opened
    assert w.current_document() is source


def test_ctrl_g_generates(qtbot, main_window):
    from PySide6.QtCore import Qt

    from usgen_desktop.gui.panels.generate import GeneratePanel

    w = main_window
    panel = w.findChild(GeneratePanel)
    panel.count.setValue(1)
    w.activateWindow()
    qtbot.keyClick(w, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(panel.gallery.items) == 1, timeout=10_000)


def test_escape_cancels_a_running_generation(qtbot, main_window, fake_backend):  # noqa: F811
    from PySide6.QtCore import Qt

    from usgen_desktop.gui.panels.generate import GeneratePanel

    fake_backend["delay"] = 0.02
    w = main_window
    panel = w.findChild(GeneratePanel)
    panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
    panel.model_dir.setText("")
    panel.steps.setValue(10)
    panel.count.setValue(50)
    handle = panel.generate()
    qtbot.waitUntil(lambda: len(panel.gallery.items) >= 1, timeout=10_000)
    w.activateWindow()
    with qtbot.waitSignal(handle.cancelled, timeout=5000):
        qtbot.keyClick(w, Qt.Key.Key_Escape)
    assert handle.wait(5000)
    assert 1 <= len(panel.gallery.items) < 50
    qtbot.waitUntil(lambda: not panel.shortcut_cancel.isEnabled(), timeout=2000)


def test_first_start_picks_the_shipped_model_for_the_opened_document(qtbot, tmp_path,
                                                                     monkeypatch):
    """Panels are installed before the project opens: the choice follows its first document."""
    from tests.gui.test_generate_panel import hc18_doc, lesion_doc
    from tests.unit.test_shipped_model import write_model
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.gui.main_window import MainWindow
    from usgen_desktop.gui.panels.generate import GeneratePanel
    from usgen_desktop.io.project import Project

    models = tmp_path / "models"
    write_model(models / "sdm-default", "busi", recommended={"guidance": 3.0, "steps": 25})
    monkeypatch.setenv("USGEN_MODELS", str(models))
    project = Project.create(tmp_path / "proj", load_preset("busi"), name="t")
    project.add([lesion_doc("case1", "benign", 0)])
    window = MainWindow(project)
    window.ask_save_changes = lambda: "discard"
    qtbot.addWidget(window)
    panel = window.findChild(GeneratePanel)
    assert panel.backend_name == "sdm"
    assert panel.model_dir.text() == str(models / "sdm-default")
    assert panel.guidance.value() == 3.0
    # a project of another schema with no shipped model: the simulator
    other = Project.create(tmp_path / "proj2", load_preset("hc18"), name="h")
    other.add([hc18_doc()])
    window.set_project(other)
    assert panel.backend_name == "speckle"
