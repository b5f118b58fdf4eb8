"""The Smart tool driven like a person: click, see the proposal, Enter / Esc, undo, the fan."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.gui.test_editor import make_doc, shown, wpos
from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import Label, LabelMap, LabelSchema
from usgen_desktop.gui.main_window import MainWindow
from usgen_desktop.io.project import Project

pytestmark = pytest.mark.gui
torch = pytest.importorskip("torch")


def everything_model(folder):
    """A tiny model that proposes the whole image (head weight 0, bias +8): the test then
    knows the exact proposal without trusting a trained network."""
    from usgen_desktop.assist.model import AssistConfig, build_model, save_model

    model = build_model(AssistConfig(size=32, channels=(4, 8), click_radius=2.0))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(8.0)
    save_model(model, folder)
    return folder


def smart_window(qtbot, tmp_path, docs, schema=None) -> MainWindow:
    from tests.gui.test_editor import schema3
    from usgen_desktop.gui.panels import assist

    project = Project.create(tmp_path / "proj", schema or schema3(), name="t")
    project.add(docs)
    win = shown(qtbot, MainWindow(project, load_panels=False))
    tool = assist.install(win)
    tool.set_model_dir(everything_model(tmp_path / "model"))
    win.select_tool("smart")
    return win


def click(qtbot, win, x, y, button=Qt.MouseButton.LeftButton) -> None:
    tool = win.tools["smart"]
    n = len(tool.clicks)
    qtbot.mouseClick(win.canvas, button, pos=wpos(win, x, y))
    assert len(tool.clicks) == n + 1
    qtbot.waitUntil(lambda: not tool.busy and tool.mask is not None, timeout=20_000)


def test_click_then_enter_is_one_undo_step(qtbot, tmp_path):
    win = smart_window(qtbot, tmp_path, [make_doc(name="a")])
    doc, tool = win.current_document(), win.tools["smart"]
    assert tool.shortcut == "A" and win.tool_actions["smart"].shortcut().toString() == "A"
    click(qtbot, win, 80, 60)
    assert tool.mask.shape == doc.shape and tool.mask.all()
    assert not (doc.labels.data == 1).any(), "a proposal is not written before Enter"
    click(qtbot, win, 10, 10, Qt.MouseButton.RightButton)
    assert [c.inside for c in tool.clicks] == [True, False]
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    assert (doc.labels.data == 1).all()
    assert len(doc.history) == 1 and tool.mask is None and not tool.clicks
    win.undo()
    assert not (doc.labels.data == 1).any()


def test_escape_discards_and_switching_images_drops_the_proposal(qtbot, tmp_path):
    win = smart_window(qtbot, tmp_path, [make_doc(name="a"), make_doc(name="b")])
    doc, tool = win.current_document(), win.tools["smart"]
    click(qtbot, win, 80, 60)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Escape)
    assert tool.mask is None and not tool.clicks and len(doc.history) == 0
    click(qtbot, win, 80, 60)
    win.step_document(1)
    assert tool.mask is None and not tool.clicks
    assert not (doc.labels.data == 1).any()


def test_the_result_is_clipped_to_the_fan(qtbot, tmp_path):
    schema = LabelSchema("hc", (Label(0, "outside fan", (0, 0, 0)), Label(1, "head", (255, 0, 0)),
                                Label(2, "sector", (0, 0, 255))), sector_id=2)
    img = np.random.default_rng(0).integers(0, 255, (100, 120)).astype(np.uint8)
    data = np.zeros((100, 120), np.uint8)
    data[:, 40:] = 2  # the fan: the right two thirds
    doc = Document(LabelMap(data), schema, UltrasoundImage(img), name="fan")
    win = smart_window(qtbot, tmp_path, [doc], schema)
    doc = win.current_document()
    win.canvas.active_label = 1
    click(qtbot, win, 80, 50)
    qtbot.keyClick(win.canvas, Qt.Key.Key_Return)
    assert (doc.labels.data[:, 40:] == 1).all()
    assert (doc.labels.data[:, :40] == 0).all(), "nothing outside the fan"


def test_a_missing_model_is_one_sentence_and_the_tool_recovers(qtbot, tmp_path):
    win = smart_window(qtbot, tmp_path, [make_doc(name="a")])
    errors: list[str] = []
    win.show_error = errors.append
    tool = win.tools["smart"]
    tool.set_model_dir(tmp_path / "nowhere")
    qtbot.mouseClick(win.canvas, Qt.MouseButton.LeftButton, pos=wpos(win, 80, 60))
    qtbot.waitUntil(lambda: bool(errors), timeout=20_000)
    assert "not an assist model folder" in errors[0] and "\n" not in errors[0]
    assert not tool.busy and not tool.clicks


def test_fine_tune_on_the_project_then_use_this_model(qtbot, tmp_path):
    from usgen_desktop.assist.model import load_model

    win = smart_window(qtbot, tmp_path, [make_doc(name="a", mask=True),
                                         make_doc(name="b", mask=True), make_doc(name="c")])
    tool, box = win.tools["smart"], win.assist_train_box
    start = tool.model_dir
    box.out_dir.setText(str(tmp_path / "tuned"))
    box.steps.setValue(3)
    handle = box.train()
    assert handle is not None and not box.train_button.isEnabled()
    qtbot.waitUntil(lambda: not box.running, timeout=60_000)
    qtbot.waitUntil(lambda: box.use_button.isEnabled(), timeout=5_000)
    assert box.result.steps == 3
    assert load_model(tmp_path / "tuned").config.size == 32, "started from the tool's model"
    assert tool.model_dir == start
    qtbot.mouseClick(box.use_button, Qt.MouseButton.LeftButton)
    assert tool.model_dir == tmp_path / "tuned"
