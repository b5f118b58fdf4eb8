"""The editor, driven like a person: drag the brush, undo, fill, polygon, lock, labels, keys."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from tests.conftest import lesion_pair
from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import Label, LabelMap, LabelSchema
from usgen_desktop.gui.main_window import MainWindow
from usgen_desktop.io.project import Project

pytestmark = pytest.mark.gui


def schema3() -> LabelSchema:
    return LabelSchema(
        "t", (Label(0, "background", (0, 0, 0)), Label(1, "lesion", (255, 0, 0)),
              Label(2, "cyst", (0, 255, 0))),
    )


def make_doc(h: int = 120, w: int = 160, name: str = "a", klass: str | None = "benign",
             mask: bool = False) -> Document:
    img, m = lesion_pair(h, w)
    labels = LabelMap((m > 0).astype(np.uint8)) if mask else LabelMap.empty(h, w)
    tags = {"class": klass} if klass else {}
    return Document(labels, schema3(), UltrasoundImage(img), name=name, tags=tags)


@pytest.fixture
def window(qtbot, tmp_path):
    project = Project.create(tmp_path / "proj", schema3(), name="test")
    project.add([make_doc(name="a"), make_doc(name="b", klass="malignant", mask=True)])
    return shown(qtbot, MainWindow(project, load_panels=False))


def shown(qtbot, win: MainWindow) -> MainWindow:
    """The window on screen at a fixed size and fitted; closing it at teardown must not block
    on a save dialog."""
    qtbot.addWidget(win)
    win.resize(900, 640)
    win.show()
    qtbot.waitExposed(win)
    win.canvas.fit()
    win.ask_save_changes = lambda: "discard"
    return win


def wpos(win: MainWindow, x: float, y: float) -> QPoint:
    """The canvas widget point over image pixel (x, y)."""
    return win.canvas.image_to_widget(x, y).toPoint()


def drag(qtbot, win: MainWindow, points: list[tuple[float, float]]) -> None:
    canvas = win.canvas
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=wpos(win, *points[0]))
    for p in points[1:]:
        qtbot.mouseMove(canvas, wpos(win, *p))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=wpos(win, *points[-1]))


def shortcut(qtbot, win: MainWindow, key, mods=Qt.KeyboardModifier.NoModifier) -> None:
    """Press a key on the canvas; the window's shortcut handles it as it would for a user."""
    if not win.isActiveWindow():  # shortcuts only reach the active window
        win.activateWindow()
        qtbot.waitUntil(win.isActiveWindow, timeout=2000)
    win.canvas.setFocus()
    qtbot.keyClick(win.canvas, key, mods)


def test_brush_stroke_paints_along_the_path_and_ctrl_z_undoes_it(qtbot, window):
    doc = window.current_document()
    assert doc is not None and doc.name == "a"
    before = doc.labels.data.copy()
    window.select_tool("brush")
    window.canvas.set_brush_size(6)
    path = [(20.0 + 6 * i, 60.0) for i in range(21)]  # x 20 -> 140 along row 60
    drag(qtbot, window, path)
    data = doc.labels.data
    assert (data[60, 20:141] == 1).all(), "every pixel along the stroke is painted"
    assert data[60 - 8, 80] == 0 and data[60 + 8, 80] == 0, "a 6 px brush stays near the path"
    assert len(doc.history) == 1, "the whole drag is one undo step"
    # the canvas overlay was re-coloured where the labels changed
    assert window.canvas._overlay_buf[60, 80, 3] == 255
    shortcut(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(doc.labels.data, before)
    assert window.canvas._overlay_buf[60, 80, 3] == 0
    shortcut(qtbot, window, Qt.Key.Key_Z,
             Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert (doc.labels.data[60, 20:141] == 1).all(), "Ctrl+Shift+Z redoes"


def test_eraser_and_brush_size_keys(qtbot, window):
    doc = window.current_document()
    doc.labels.data[40:80, 40:120] = 1
    window.canvas.refresh()
    shortcut(qtbot, window, Qt.Key.Key_E)
    assert window.canvas.tool.name == "eraser"
    size = window.canvas.brush_size
    shortcut(qtbot, window, Qt.Key.Key_BracketRight)
    assert window.canvas.brush_size > size
    shortcut(qtbot, window, Qt.Key.Key_BracketLeft)
    shortcut(qtbot, window, Qt.Key.Key_BracketLeft)
    assert window.canvas.brush_size < size
    drag(qtbot, window, [(50.0, 60.0), (110.0, 60.0)])
    assert (doc.labels.data[60, 50:111] == 0).all()
    assert (doc.labels.data[42, 50:110] == 1).all(), "rows away from the eraser keep the label"


def test_flood_fill_click_fills_the_enclosed_region(qtbot, window):
    doc = window.current_document()
    ring = np.zeros(doc.shape, np.uint8)
    import cv2

    cv2.circle(ring, (80, 60), 30, 2, 2)
    doc.labels.data[:] = ring
    window.canvas.refresh()
    window.label_panel.select_label(1)
    shortcut(qtbot, window, Qt.Key.Key_G)
    assert window.canvas.tool.name == "fill"
    qtbot.mouseClick(window.canvas, Qt.MouseButton.LeftButton, pos=wpos(window, 80, 60))
    data = doc.labels.data
    assert data[60, 80] == 1 and data[60, 60] == 1, "inside the ring is filled"
    assert data[5, 5] == 0, "outside the ring is untouched"
    assert (data[ring == 2] == 2).all(), "the ring itself keeps its label"
    doc.undo()
    assert data[60, 80] == 0


def test_polygon_clicks_and_enter_fill_the_shape(qtbot, window):
    doc = window.current_document()
    shortcut(qtbot, window, Qt.Key.Key_P)
    assert window.canvas.tool.name == "polygon"
    for x, y in [(30, 30), (120, 30), (120, 90), (30, 90)]:
        qtbot.mouseClick(window.canvas, Qt.MouseButton.LeftButton, pos=wpos(window, x, y))
    assert not doc.labels.data.any(), "nothing is filled before the shape is closed"
    shortcut(qtbot, window, Qt.Key.Key_Return)
    data = doc.labels.data
    assert data[60, 75] == 1 and data[35, 35] == 1
    assert data[10, 10] == 0 and data[100, 140] == 0
    assert len(doc.history) == 1


def test_lasso_drag_fills_and_double_click_closes_polygon(qtbot, window):
    doc = window.current_document()
    window.select_tool("polygon")
    lasso = [(30.0, 30.0), (60.0, 30.0), (60.0, 60.0), (30.0, 60.0), (30.0, 31.0)]
    drag(qtbot, window, lasso)
    assert doc.labels.data[45, 45] == 1
    window.label_panel.select_label(2)
    for x, y in [(100, 70), (140, 70), (140, 110)]:
        qtbot.mouseClick(window.canvas, Qt.MouseButton.LeftButton, pos=wpos(window, x, y))
    qtbot.mouseDClick(window.canvas, Qt.MouseButton.LeftButton, pos=wpos(window, 100, 110))
    assert doc.labels.data[95, 120] == 2


def test_lock_keeps_other_labels_untouched(qtbot, window):
    doc = window.current_document()
    doc.labels.data[50:70, 70:90] = 2  # someone else's label, in the brush's way
    window.canvas.refresh()
    window.label_panel.select_label(1)
    shortcut(qtbot, window, Qt.Key.Key_L)
    assert window.act_lock.isChecked() and doc.edit_lock == 1
    window.select_tool("brush")
    window.canvas.set_brush_size(10)
    drag(qtbot, window, [(20.0 + 10 * i, 60.0) for i in range(13)])
    data = doc.labels.data
    assert (data[50:70, 70:90] == 2).all(), "the locked brush does not paint over label 2"
    assert data[60, 30] == 1 and data[60, 130] == 1
    window.label_panel.select_label(2)
    assert doc.edit_lock == 2, "the lock follows the active label"
    shortcut(qtbot, window, Qt.Key.Key_L)
    assert doc.edit_lock is None


def test_label_rename_hide_recolour_change_the_schema(qtbot, window):
    doc = window.current_document()
    doc.labels.data[10:20, 10:20] = 1
    window.canvas.refresh()
    panel = window.label_panel
    item = panel.list.item(1)  # the row of id 1
    item.setText("tumour")
    assert window.project.schema.by_id(1).name == "tumour"
    assert doc.schema.by_id(1).name == "tumour"
    assert window.canvas._overlay_buf[15, 15, 3] == 255
    panel.list.item(1).setCheckState(Qt.CheckState.Unchecked)
    assert not window.project.schema.by_id(1).visible
    assert window.canvas._overlay_buf[15, 15, 3] == 0, "a hidden label is not drawn"
    panel.set_visible(1, True)
    panel.ask_colour = lambda initial, name: type(initial)(0, 0, 255)
    panel.select_label(1)
    panel.recolour_current()
    assert doc.schema.by_id(1).color == (0, 0, 255)
    b, g, r, a = window.canvas._overlay_buf[15, 15]  # premultiplied BGRA in memory
    assert (b, g, r, a) == (255, 0, 0, 255)
    # the other document of the project shares the edited schema
    other = window.project.documents[1]
    assert other.schema.by_id(1).name == "tumour"


def test_number_keys_pick_the_active_label(qtbot, window):
    shortcut(qtbot, window, Qt.Key.Key_2)
    assert window.canvas.active_label == 2
    shortcut(qtbot, window, Qt.Key.Key_1)
    assert window.canvas.active_label == 1


def test_tool_tooltips_show_shortcuts_and_every_action_has_one(window):
    for name, key in (("brush", "B"), ("eraser", "E"), ("fill", "G"), ("polygon", "P"),
                      ("pan", "H")):
        act = window.tool_actions[name]
        assert f"({key})" in act.toolTip()
        assert act.shortcut().toString() == key
    assert "Ctrl+Z" in window.act_undo.toolTip()
    table = dict(window.shortcut_table())
    assert table["Brush"] == "B" and table["Save"] == "Ctrl+S" and table["Label 3"] == "3"
    keys = {s.toString() for s in window.act_redo.shortcuts()}
    assert {"Ctrl+Shift+Z", "Ctrl+Y"} <= keys


def test_wheel_zooms_about_the_cursor_and_f_fits(qtbot, window):
    canvas = window.canvas
    at = QPointF(wpos(window, 40, 30))
    before = canvas.widget_to_image(at)
    ev = QWheelEvent(at, canvas.mapToGlobal(at), QPoint(0, 0), QPoint(0, 240),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                     Qt.ScrollPhase.NoScrollPhase, False)
    scale = canvas.scale
    QApplication.sendEvent(canvas, ev)
    assert canvas.scale == pytest.approx(scale * 1.44, rel=1e-6)
    after = canvas.widget_to_image(at)
    assert after == pytest.approx(before, abs=1e-6), "the point under the cursor stays put"
    assert window.status_zoom.text().startswith("zoom")
    shortcut(qtbot, window, Qt.Key.Key_F)
    assert canvas.scale == pytest.approx(scale)


def test_middle_drag_pans(qtbot, window):
    canvas = window.canvas
    off = QPointF(canvas.offset)
    qtbot.mousePress(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(140, 120))
    qtbot.mouseRelease(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(140, 120))
    assert canvas.offset.x() == pytest.approx(off.x() + 40)
    assert canvas.offset.y() == pytest.approx(off.y() + 20)
    assert not window.current_document().labels.data.any(), "panning never paints"


def test_status_bar_reports_position_value_and_label(qtbot, window):
    window.open_document(window.project.documents[1].uid)  # "b" has a mask
    doc = window.current_document()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=2000)
    qtbot.mouseMove(window.canvas, wpos(window, 10, 10))
    qtbot.mouseMove(window.canvas, wpos(window, 80, 60))
    assert window.status_pos.text() == "x 80, y 60"
    assert window.status_value.text() == f"value {int(doc.image.pixels[60, 80])}"
    assert window.status_label.text() == "lesion (id 1)"


def test_image_list_shows_class_and_mask_and_opens_on_click(qtbot, window):
    model = window.image_list.model
    texts = [model.data(model.index(i)) for i in range(model.rowCount())]
    assert texts[0] == "a\nbenign · no mask"
    assert texts[1] == "b\nmalignant · mask"
    only = Document.blank(50, 60, schema3(), name="variant")
    window.add_documents([only], select=False)
    assert window.current_document().name == "a"
    assert model.data(model.index(2)).endswith("label map only")
    view = window.image_list.view
    rect = view.visualRect(window.image_list.proxy.index(1, 0))
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.current_document().name == "b"
    shortcut(qtbot, window, Qt.Key.Key_PageDown)
    assert window.current_document().name == "variant"
    window.image_list.filter.setText("malig")
    assert window.image_list.proxy.rowCount() == 1


def test_optional_panels_are_skipped_or_reported(qtbot, tmp_path, monkeypatch):
    import sys
    import types

    from usgen_desktop.gui import main_window

    broken = types.ModuleType("usgen_desktop.gui.panels.broken")

    def install(win):  # noqa: ANN001
        raise RuntimeError("boom")

    broken.install = install
    added = []
    fine = types.ModuleType("usgen_desktop.gui.panels.fine")
    fine.install = lambda win: added.append(win)
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    monkeypatch.setitem(sys.modules, fine.__name__, fine)
    monkeypatch.setattr(main_window, "PANELS", ["not_there_yet", "broken", "fine"])
    project = Project.create(tmp_path / "p", schema3())
    win = MainWindow(project, load_panels=True)
    qtbot.addWidget(win)
    assert added == [win]
    assert len(win.panel_errors) == 1 and "broken" in win.panel_errors[0]


def test_register_tool_adds_an_action_with_its_shortcut(qtbot, window):
    from usgen_desktop.gui.tools import CanvasTool

    calls = []

    class Stamp(CanvasTool):
        name, title, shortcut, tooltip = "stamp", "Stamp", "W", "stamp a dot"

        def press(self, canvas, x, y, mods):  # noqa: ANN001
            calls.append(canvas.pixel_at(x, y))

    window.register_tool(Stamp())
    assert "(W)" in window.tool_actions["stamp"].toolTip()
    shortcut(qtbot, window, Qt.Key.Key_W)
    qtbot.mouseClick(window.canvas, Qt.MouseButton.LeftButton, pos=wpos(window, 10, 20))
    assert calls == [(10, 20)]


def test_eraser_in_a_fan_turns_the_label_back_into_sector(qtbot, tmp_path):
    from usgen_desktop.core.labels import load_preset

    hc18 = load_preset("hc18")  # 0 outside fan, 1 fetal head, 2 sector
    doc = Document.blank(120, 160, hc18, image=UltrasoundImage(lesion_pair(120, 160)[0]),
                         name="fan")
    doc.labels.data[:, 40:120] = 2
    doc.labels.data[40:80, 60:100] = 1
    win = MainWindow(Project.create(tmp_path / "fan", hc18), load_panels=False)
    win.ask_save_changes = lambda: "discard"  # teardown closes it; never block on a dialog
    qtbot.addWidget(win)
    win.resize(800, 600)
    win.show()
    win.add_documents([doc])
    assert win.current_document() is doc
    win.label_panel.select_label(1)
    win.select_tool("eraser")
    win.canvas.set_brush_size(10)
    drag(qtbot, win, [(10.0, 60.0), (150.0, 60.0)])
    data = doc.labels.data
    assert (data[60, 60:100] == 2).all(), "erased head becomes sector, not outside-the-fan"
    assert (data[60, :40] == 0).all() and (data[60, 120:] == 0).all(), "no fan is added"
    assert (data[45, 60:100] == 1).all()
    win.label_panel.select_label(2)
    drag(qtbot, win, [(50.0, 100.0), (110.0, 100.0)])
    assert (data[100, 50:111] == 0).all(), "with the sector active the eraser shrinks the fan"


def test_space_drag_pans_without_painting(qtbot, window):
    canvas = window.canvas
    window.select_tool("brush")
    off = QPointF(canvas.offset)
    canvas.setFocus()
    qtbot.keyPress(canvas, Qt.Key.Key_Space)
    drag(qtbot, window, [(40.0, 40.0), (60.0, 50.0)])
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert canvas.offset != off
    assert not window.current_document().labels.data.any()


def test_empty_project_shows_a_hint(qtbot, tmp_path):
    win = MainWindow(Project.create(tmp_path / "empty", schema3()), load_panels=False)
    qtbot.addWidget(win)
    assert win.current_document() is None
    assert "Import" in win.canvas.empty_hint
    win.resize(600, 400)
    win.show()
    assert not win.canvas.grab().isNull()  # paints without a document
    assert not win.act_undo.isEnabled()


def test_refresh_document_shows_an_image_that_arrived_later(qtbot, window):
    only = Document.blank(120, 160, schema3(), name="waiting")
    window.add_documents([only])
    canvas = window.canvas
    assert canvas._image is None
    canvas.zoom_by(2.0)
    scale = canvas.scale
    only.image = UltrasoundImage(np.full((120, 160), 200, np.uint8))  # e.g. generated
    window.refresh_document(only)
    assert canvas._image is not None and canvas._image_buf[10, 10, 0] == 200
    assert canvas.scale == pytest.approx(scale), "the view stays where the user left it"
    assert window.image_list.model.data(window.image_list.model.index(2)).endswith("no mask")


def test_delete_key_removes_the_open_image_after_asking(qtbot, window):
    asked = []
    window.ask_remove = lambda doc: asked.append(doc.name) or True
    shortcut(qtbot, window, Qt.Key.Key_Delete)
    assert asked == ["a"]
    assert [d.name for d in window.project.documents] == ["b"]
    assert window.current_document().name == "b"
    assert window.image_list.model.rowCount() == 1
    assert window.isWindowModified()


def test_switching_images_abandons_a_half_drawn_polygon(qtbot, window):
    window.select_tool("polygon")
    for x, y in [(30, 30), (120, 30), (120, 90)]:
        qtbot.mouseClick(window.canvas, Qt.MouseButton.LeftButton, pos=wpos(window, x, y))
    shortcut(qtbot, window, Qt.Key.Key_PageDown)
    assert window.current_document().name == "b"
    before = window.current_document().labels.data.copy()
    shortcut(qtbot, window, Qt.Key.Key_Return)
    assert np.array_equal(window.current_document().labels.data, before)
    assert not window.project.documents[0].labels.data.any()
