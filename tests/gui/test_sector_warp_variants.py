"""Sector handles, the warp tool and the variants gallery, driven through the main window."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from tests.gui.test_editor import drag, make_doc, schema3, shown, wpos
from usgen_desktop.core.deform import DeformParams
from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.core.sector import Sector
from usgen_desktop.gui.main_window import MainWindow
from usgen_desktop.gui.panels import sector as sector_panel
from usgen_desktop.gui.panels import variants as variants_panel
from usgen_desktop.io.project import Project

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, tmp_path):
    project = Project.create(tmp_path / "proj", schema3(), name="test")
    doc = make_doc(name="a", mask=True)
    project.add([doc])
    win = MainWindow(project, load_panels=False)
    sector_panel.install(win)
    variants_panel.install(win)
    return shown(qtbot, win)


@pytest.fixture
def fan_window(qtbot, tmp_path):
    """A project with the HC18 schema (it has a sector label) and one empty label map."""
    hc = load_preset("hc18")
    project = Project.create(tmp_path / "fan", hc, name="fan")
    project.add([Document(LabelMap.empty(120, 160), hc, None, name="blank")])
    win = MainWindow(project, load_panels=False)
    sector_panel.install(win)
    return shown(qtbot, win)


def test_warp_drag_moves_the_lesion_and_undo_restores_it(qtbot, window):
    doc = window.current_document()
    before = doc.labels.data.copy()
    cx0 = np.nonzero(before == 1)[1].mean()
    window.select_tool("warp")
    window.canvas.set_brush_size(20)  # radius 40 px
    drag(qtbot, window, [(80.0 + 2 * i, 60.0) for i in range(11)])  # 20 px to the right
    cx1 = np.nonzero(doc.labels.data == 1)[1].mean()
    assert cx1 > cx0 + 3
    assert set(np.unique(doc.labels.data)) <= {0, 1}
    assert len(doc.history) == 1  # one drag, one undo step
    window.act_undo.trigger()
    assert np.array_equal(doc.labels.data, before)


def test_warp_works_zoomed_in_where_each_mouse_move_is_a_fraction_of_a_pixel(qtbot, window):
    doc = window.current_document()
    before = doc.labels.data.copy()
    right0 = np.nonzero(before[55:66] == 1)[1].max()
    window.select_tool("warp")
    window.canvas.set_brush_size(10)  # radius 20 px
    window.canvas.set_zoom(8.0)  # one screen pixel = 1/8 image pixel
    p = window.canvas.image_to_widget(104.0, 60.0)
    window.canvas.pan_by(window.canvas.width() / 2 - p.x(), window.canvas.height() / 2 - p.y())
    assert window.canvas.rect().contains(wpos(window, 106.0, 60.0))
    drag(qtbot, window, [(100.0 + 0.25 * i, 60.0) for i in range(33)])  # 8 px in 1/4 steps
    right1 = np.nonzero(doc.labels.data[55:66] == 1)[1].max()
    assert right1 >= right0 + 4
    assert len(doc.history) == 1
    window.act_undo.trigger()
    assert np.array_equal(doc.labels.data, before)


def drag_with(qtbot, win, points, mods):
    canvas = win.canvas
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, mods, wpos(win, *points[0]))
    for p in points[1:]:
        # QTest's mouseMove carries no modifiers; send the move event with them ourselves.
        ev = QMouseEvent(QEvent.Type.MouseMove, QPointF(wpos(win, *p)),
                         QPointF(canvas.mapToGlobal(wpos(win, *p))), Qt.MouseButton.NoButton,
                         Qt.MouseButton.LeftButton, mods)
        QApplication.sendEvent(canvas, ev)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, mods, wpos(win, *points[-1]))


def test_shift_drag_moves_a_label_whole_and_ctrl_drag_scales_it(qtbot, window):
    doc = window.current_document()
    before = doc.labels.data.copy()
    area0 = (before == 1).sum()
    cx0 = np.nonzero(before == 1)[1].mean()
    window.select_tool("warp")
    drag_with(qtbot, window, [(80.0 + 2 * i, 60.0) for i in range(8)],
              Qt.KeyboardModifier.ShiftModifier)  # 14 px to the right
    moved = doc.labels.data
    assert np.nonzero(moved == 1)[1].mean() == pytest.approx(cx0 + 14, abs=1.5)
    assert abs((moved == 1).sum() - area0) < 0.03 * area0  # moved, not smeared
    assert len(doc.history) == 1
    window.act_undo.trigger()
    assert np.array_equal(doc.labels.data, before)
    drag_with(qtbot, window, [(80.0, 60.0 - 2 * i) for i in range(11)],
              Qt.KeyboardModifier.ControlModifier)  # 20 px up: about 1.22x larger
    assert (doc.labels.data == 1).sum() > 1.3 * area0
    window.act_undo.trigger()
    assert np.array_equal(doc.labels.data, before)


def test_sector_handles_drag_and_apply_writes_the_sector_label(qtbot, fan_window):
    window = fan_window
    hc = load_preset("hc18")
    doc = window.current_document()
    sector_panel.set_sector(doc, Sector.fan((80, -20), 40, 120, -30, 30))
    window.select_tool("sector")
    hx, hy = Sector.from_dict(doc.tags["sector"]).handles()["outer"]
    drag(qtbot, window, [(hx, hy), (hx, hy - 10), (hx, hy - 20)])
    s = Sector.from_dict(doc.tags["sector"])
    assert s.outer_radius == pytest.approx(100, abs=3)
    window.act_apply_sector.trigger()
    fov = s.rasterize(doc.shape)
    assert (doc.labels.data[fov] == hc.sector_id).all()
    assert (doc.labels.data[~fov] == 0).all()
    window.act_undo.trigger()
    assert not doc.labels.data.any()


def test_drawing_a_sector_on_an_empty_map(qtbot, fan_window):
    window = fan_window
    doc = window.current_document()
    window.select_tool("sector")
    window.tools["sector"].kind = "phased"
    drag(qtbot, window, [(80, 5), (100, 60), (110, 100)])
    s = Sector.from_dict(doc.tags["sector"])
    assert s.kind == "phased"
    assert s.apex_x == pytest.approx(80, abs=2) and s.outer_radius > 80


def test_transform_label_moves_the_active_label(qtbot, window):
    doc = window.current_document()
    cx0 = np.nonzero(doc.labels.data == 1)[1].mean()
    window.canvas.active_label = 1
    sector_panel.transform_active_label(doc, 1, dx=15, dy=0, angle_deg=0, scale=1.0)
    assert np.nonzero(doc.labels.data == 1)[1].mean() == pytest.approx(cx0 + 15, abs=1.5)


def test_variants_run_in_the_worker_and_kept_ones_become_label_maps(qtbot, window):
    doc = window.current_document()
    n_before = len(window.project.documents)
    ctl = window.variants
    ctl.start([doc], 3, DeformParams(), seed=0, show_gallery=False)
    # Wait on the outcome, not on the finished signal: a fast worker can emit it before a
    # waitSignal placed after start() is listening (this was a flaky failure).
    qtbot.waitUntil(lambda: ctl.last_gallery is not None, timeout=20000)
    gal = ctl.last_gallery
    assert gal.list.count() == 3
    gal.list.item(1).setCheckState(Qt.CheckState.Unchecked)
    kept = gal.kept_documents()
    assert len(kept) == 2
    window.add_documents(kept, select=False)
    assert len(window.project.documents) == n_before + 2
    v = kept[0]
    assert v.image is None and v.parent == doc.uid
    assert v.provenance["kind"] == "variant" and "seed" in v.provenance
    assert v.labels != doc.labels


def test_panels_install_their_tools(window):
    assert {"sector", "warp"} <= set(window.tools)
    assert "W" in window.tools["warp"].full_tooltip()
    _ = wpos  # drag helpers shared with the editor tests
