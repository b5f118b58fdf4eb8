"""The Add-lesion tool in the main window: click proposes (the label map untouched), R
re-rolls, drags edit the proposal, Enter accepts it as one undo step, and the image is then
inpainted inside the lesion through the Generate panel (a fake backend here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.gui.test_editor import drag, shortcut, shown, wpos
from tests.gui.test_generate_panel import fake_backend  # noqa: F401
from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.gui.main_window import MainWindow
from usgen_desktop.gui.panels import generate as generate_panel
from usgen_desktop.gui.panels import lesion as lesion_panel
from usgen_desktop.io.project import Project

pytestmark = pytest.mark.gui


SOURCE = Path("/scans/normal1.png")  # where the scan was read from (never opened here)


def normal_scan(h: int = 120, w: int = 160) -> Document:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w), np.uint8)
    img[6:-10, 12:-12] = rng.integers(60, 200, (h - 16, w - 24))  # a black frame around
    return Document(LabelMap.empty(h, w), load_preset("busi"),
                    UltrasoundImage(img, source=SOURCE), name="normal1",
                    tags={"class": "normal"})


@pytest.fixture
def window(qtbot, tmp_path, fake_backend):  # noqa: F811
    project = Project.create(tmp_path / "proj", load_preset("busi"), name="t")
    project.add([normal_scan()])
    win = MainWindow(project, load_panels=False)
    win.show_error = lambda msg: pytest.fail(f"error dialog: {msg}")
    gen = generate_panel.install(win)
    gen.backend.setCurrentIndex(gen.backend.findData("speckle"))
    panel = lesion_panel.install(win)
    win = shown(qtbot, win)
    shortcut(qtbot, win, Qt.Key.Key_M)  # M for mass: the tool and its dock
    assert win.canvas.tool is win.tools["lesion"]
    panel.klass.setCurrentIndex(panel.klass.findData("malignant"))
    panel.size.setCurrentIndex(panel.size.findData("medium"))
    win.lesion_panel_ = panel
    return win


def click(qtbot, win, x, y):
    qtbot.mouseClick(win.canvas, Qt.MouseButton.LeftButton, pos=wpos(win, x, y))


def test_propose_reroll_edit_accept_is_one_undo_step_then_inpaints(
        qtbot, window, fake_backend, tmp_path):  # noqa: F811
    doc = window.current_document()
    tool = window.tools["lesion"]
    panel = window.lesion_panel_
    assert window.findChild(type(panel)).isVisible()  # the dock shows with the tool
    click(qtbot, window, 80, 55)
    assert tool.mask is not None and tool.mask.any()
    assert not doc.labels.data.any() and len(doc.history) == 0  # only a proposal
    ys, xs = np.nonzero(tool.mask)
    assert abs(xs.mean() - 80) < 6 and abs(ys.mean() - 55) < 6
    tissue = doc.image.pixels > 0
    assert tissue[tool.mask].all()  # on the scan, off the black frame
    # a new size (or class) redraws the proposal at the same place
    medium = int(tool.mask.sum())
    panel.size.setCurrentIndex(panel.size.findData("large"))
    assert int(tool.mask.sum()) > medium
    first = tool.mask.copy()
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_R)
    assert tool.mask is not None and not np.array_equal(tool.mask, first)
    # a drag paints more of the proposal with the brush
    window.canvas.set_brush_size(6)
    before_edit = int(tool.mask.sum())
    drag(qtbot, window, [(40.0 + 3 * i, 95.0) for i in range(8)])
    assert int(tool.mask.sum()) > before_edit
    proposal = tool.mask.copy()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    assert tool.mask is None
    assert np.array_equal(doc.labels.data == 1, proposal)
    assert len(doc.history) == 1  # accept is one undo step
    # accepting asked the Generate panel to inpaint inside the lesion, with its class
    gen = window.findChild(generate_panel.GeneratePanel)
    qtbot.waitUntil(lambda: not gen.running, timeout=10_000)
    request = fake_backend["loaded"][-1]
    assert request.backend == "sdm" and request.classes == ["malignant"]
    region = request.inpaint_masks[0] > 0
    assert region[proposal].all() and region.sum() > proposal.sum()
    assert np.array_equal(request.init_images[0], doc.image.to_uint8())
    # the accepted result and its export say which image was kept and where it changed
    new = gen.gallery.accept_all()[0]
    region = new.provenance["inpaint"]["region"]
    ys, xs = np.nonzero(proposal)
    x0, y0, x1, y1 = region["bbox"]
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert region["area_px"] > proposal.sum()
    from usgen_desktop.export.pairs import export_pairs

    export_pairs([new], tmp_path / "export", "folder")
    rec = json.loads((tmp_path / "export" / "manifest.jsonl").read_text().splitlines()[0])
    assert rec["source"] == str(SOURCE) and rec["provenance"]["inpaint"]["region"] == region
    window.act_undo.trigger()
    assert not doc.labels.data.any()


def test_escape_drops_and_a_click_outside_the_tissue_lands_inside(qtbot, window):
    doc = window.current_document()
    tool = window.tools["lesion"]
    window.lesion_panel_.inpaint.setChecked(False)
    click(qtbot, window, 2, 2)  # on the black frame, in the corner
    assert tool.mask is not None
    assert (doc.image.pixels[tool.mask] > 0).all()
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key.Key_Escape)
    assert tool.mask is None and not doc.labels.data.any() and len(doc.history) == 0
