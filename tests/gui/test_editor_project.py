"""The editor's project side: autosave and restore, save on close, import, export, start-up."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.conftest import lesion_pair
from tests.gui.test_editor import drag, make_doc, schema3, shortcut
from usgen_desktop.gui import project_io
from usgen_desktop.gui.main_window import MainWindow
from usgen_desktop.io.project import Project

pytestmark = pytest.mark.gui


def open_window(qtbot, project: Project, **answers) -> MainWindow:
    """A window whose prompts answer from ``answers`` instead of opening dialogs."""
    asked: list[str] = []
    restore = answers.get("restore", True)
    save = answers.get("save", "discard")

    class Win(MainWindow):
        def ask_restore(self, when):  # noqa: ANN001
            asked.append("restore")
            return restore

        def ask_save_changes(self):
            asked.append("save")
            return save

    win = Win(project, load_panels=False)
    win.asked = asked
    qtbot.addWidget(win)
    win.resize(800, 600)
    win.show()
    qtbot.waitExposed(win)
    win.canvas.fit()
    return win


def saved_project(tmp_path) -> Project:
    project = Project.create(tmp_path / "proj", schema3(), name="p")
    project.add([make_doc(name="a"), make_doc(name="b", mask=True)])
    project.save()
    return project


def test_autosave_then_reopen_offers_restore(qtbot, tmp_path):
    win = open_window(qtbot, saved_project(tmp_path))
    win.select_tool("brush")
    win.canvas.set_brush_size(8)
    drag(qtbot, win, [(20.0, 50.0), (100.0, 50.0)])
    painted = win.current_document().labels.data.copy()
    assert painted[50, 60] == 1
    assert win.autosaver.tick() == 1, "the changed label map is autosaved"
    assert win.autosaver.tick() == 0, "nothing new, nothing written"
    # a crash now: the window goes away without saving; reopen the project from disk
    reopened = Project.open(tmp_path / "proj")
    assert not reopened.documents[0].labels.data.any(), "the save itself was not touched"
    win2 = open_window(qtbot, reopened, restore=True)
    assert win2.asked == ["restore"]
    assert np.array_equal(win2.current_document().labels.data, painted)
    assert win2.isWindowModified(), "restored changes are unsaved changes"
    assert win2.act_undo.isEnabled()
    win2.current_document().undo()  # the restore is one undo step, like an edit
    assert not win2.current_document().labels.data.any()


def test_declining_restore_discards_the_autosave(qtbot, tmp_path):
    win = open_window(qtbot, saved_project(tmp_path))
    drag(qtbot, win, [(20.0, 50.0), (100.0, 50.0)])
    win.autosaver.tick()
    win2 = open_window(qtbot, Project.open(tmp_path / "proj"), restore=False)
    assert win2.asked == ["restore"]
    assert not win2.current_document().labels.data.any()
    assert not win2.project.has_autosave()
    win3 = open_window(qtbot, Project.open(tmp_path / "proj"))
    assert win3.asked == [], "a discarded autosave is not offered again"


def test_no_autosave_tick_mid_stroke(qtbot, tmp_path):
    win = open_window(qtbot, saved_project(tmp_path))
    doc = win.current_document()
    doc.begin_stroke("brush")
    doc.paint_line((10, 10), (40, 10), 3, 1)
    assert win.autosaver.tick() == 0, "half a stroke is never autosaved"
    doc.end_stroke()
    assert win.autosaver.tick() == 1


def test_ctrl_s_saves_and_close_asks_about_unsaved_changes(qtbot, tmp_path):
    win = open_window(qtbot, saved_project(tmp_path), save="cancel")
    drag(qtbot, win, [(20.0, 50.0), (100.0, 50.0)])
    assert win.isWindowModified()
    assert not win.close(), "Cancel keeps the window open"
    assert win.asked == ["save"]
    shortcut(qtbot, win, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert not win.project.is_dirty() and not win.isWindowModified()
    assert Project.open(tmp_path / "proj").documents[0].labels.data[50, 60] == 1
    assert win.close(), "nothing unsaved: closes without asking again"
    assert win.asked == ["save"]


def test_close_with_save_answer_writes_the_project(qtbot, tmp_path):
    win = open_window(qtbot, saved_project(tmp_path), save="save")
    drag(qtbot, win, [(20.0, 50.0), (100.0, 50.0)])
    assert win.close()
    assert Project.open(tmp_path / "proj").documents[0].labels.data[50, 60] == 1


def write_pairs(folder, n: int = 3) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        img, mask = lesion_pair(64, 80, seed=i)
        cv2.imwrite(str(folder / "images" / f"case{i}.png"), img)
        cv2.imwrite(str(folder / "masks" / f"case{i}.png"), mask)


def test_import_folder_adds_documents_and_lists_problems_once(qtbot, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_pairs(data, 3)
    (data / "images" / "broken.png").write_bytes(b"not a png at all")
    shown: list[list[str]] = []
    monkeypatch.setattr(project_io, "show_problems",
                        lambda parent, title, intro, problems: shown.append(list(problems)))
    project = Project.create(tmp_path / "proj", schema3())
    win = open_window(qtbot, project)
    docs = win.import_paths([data])
    assert sorted(d.name for d in docs) == ["case0", "case1", "case2"]
    assert len(win.project.documents) == 3
    assert win.current_document() is docs[0]
    assert docs[0].labels.data.any(), "the masks came along"
    assert len(shown) == 1 and len(shown[0]) >= 1
    assert any("broken" in p for p in shown[0])
    assert win.image_list.model.rowCount() == 3
    # the project was clean, so the import is saved at once (images and all)
    assert not win.project.is_dirty()
    assert len(Project.open(tmp_path / "proj").documents) == 3


def test_import_of_missing_folder_is_one_sentence(qtbot, tmp_path, monkeypatch):
    errors: list[str] = []
    win = open_window(qtbot, Project.create(tmp_path / "proj", schema3()))
    monkeypatch.setattr(win, "show_error", errors.append)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert win.import_paths([empty]) == []
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0]


def test_export_dialog_writes_an_nnunet_dataset(qtbot, tmp_path):
    from usgen_desktop.gui.export_dialog import ExportDialog, describe_report

    project = saved_project(tmp_path)
    project.documents[0].labels.data[5:20, 5:30] = 2  # two labels, and both docs have masks
    dlg = ExportDialog(None, project, selected=[])
    qtbot.addWidget(dlg)
    assert "(2)" in dlg.all_masked.text()
    dlg.format.setCurrentIndex(dlg.format.findData("nnunet"))
    out = tmp_path / "out"
    dlg.folder.setText(str(out))
    dlg.name.setText("Lesions")
    dlg.dataset_id.setValue(777)
    report = dlg.export()
    root = out / "Dataset777_Lesions"
    assert report.count == 2
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".png"
    assert sorted(meta["labels"].values()) == [0, 1, 2]
    assert len(list((root / "imagesTr").glob("*_0000.png"))) == 2
    assert len((root / "manifest.jsonl").read_text().splitlines()) == 2
    assert "Exported 2 pairs" in describe_report(report)
    # a second export to the same place is refused, not silently overwritten
    from usgen_desktop.errors import ExportError

    with pytest.raises(ExportError):
        dlg.export()
    dlg.overwrite.setChecked(True)
    assert dlg.export().count == 2


def test_export_dialog_selected_only(qtbot, tmp_path):
    from usgen_desktop.errors import ExportError
    from usgen_desktop.gui.export_dialog import ExportDialog

    project = saved_project(tmp_path)
    # "a" was never labelled (no mask file, nothing drawn): the one export rule leaves it out
    dlg = ExportDialog(None, project, selected=[d.uid for d in project.documents])
    qtbot.addWidget(dlg)
    dlg.only_selected.setChecked(True)
    dlg.format.setCurrentIndex(dlg.format.findData("folder"))
    dlg.folder.setText(str(tmp_path / "sel"))
    report = dlg.export()
    assert report.count == 1 and "'a' was never labelled" in report.skipped[0]
    assert len(list((tmp_path / "sel" / "images").glob("*.png"))) == 1
    only_a = ExportDialog(None, project, selected=[project.documents[0].uid])
    qtbot.addWidget(only_a)
    only_a.only_selected.setChecked(True)
    only_a.folder.setText(str(tmp_path / "sel2"))
    with pytest.raises(ExportError, match="never had a mask"):
        only_a.export()


def test_app_main_opens_a_project_and_returns(qtbot, tmp_path, capsys):
    from usgen_desktop.gui import app

    saved_project(tmp_path)
    rc = app.main(["--project", str(tmp_path / "proj"), "--exit-after-show"])
    assert rc == 0
    assert "window shown" in capsys.readouterr().out
    settings = app.app_settings()
    assert settings.value("project/last") == str(tmp_path / "proj")
    from pathlib import Path

    from usgen_desktop.paths import user_config_dir

    assert Path(settings.fileName()).parent == user_config_dir(), "never the install folder"
    assert settings.format() == settings.Format.IniFormat


def test_first_start_opens_the_demo_project(qtbot, tmp_path):
    from usgen_desktop.gui import app
    from usgen_desktop.io.project import default_projects_dir

    assert app.main(["--exit-after-show"]) == 0
    demo = default_projects_dir() / app.DEMO_NAME
    assert (demo / "project.json").is_file()
    settings = app.app_settings()
    assert settings.value("project/last") == str(demo)


def test_open_path_makes_a_project_of_its_own(qtbot, tmp_path, monkeypatch):
    from usgen_desktop.gui import app

    data = tmp_path / "scans"
    write_pairs(data, 2)
    project, todo = app.choose_project(app.build_parser().parse_args(["--open", str(data)]),
                                       app.app_settings())
    assert todo == [data] and project.folder.name == "scans"
    project.save()
    again, todo2 = app.choose_project(app.build_parser().parse_args(["--open", str(data)]),
                                      app.app_settings())
    assert todo2 == [], "opened before: reopen the project, do not import twice"
    one = tmp_path / "scan.png"
    cv2.imwrite(str(one), lesion_pair(40, 50)[0])
    single, todo3 = app.choose_project(app.build_parser().parse_args(["--open", str(one)]),
                                       app.app_settings())
    assert todo3 == [one] and single.folder.name == "scan"
    win = open_window(qtbot, single)
    assert [d.name for d in win.import_paths(todo3)] == ["scan"]
    assert win.current_document().image.shape == (40, 50)


def test_dropping_a_folder_imports_it(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    data = tmp_path / "drop"
    write_pairs(data, 2)
    monkeypatch.setattr(project_io, "show_problems", lambda *a: None)
    win = open_window(qtbot, Project.create(tmp_path / "proj", schema3()))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(data))])
    ev = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                    Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)
    assert sorted(d.name for d in win.project.documents) == ["case0", "case1"]


def test_demo_is_imported_once_from_resources(qtbot, tmp_path, monkeypatch):
    import shutil

    from usgen_desktop.gui import app
    from usgen_desktop.paths import resources_dir

    res = tmp_path / "resources"
    shutil.copytree(resources_dir() / "schemas", res / "schemas")
    monkeypatch.setenv("USGEN_RESOURCES", str(res))
    assert app.demo_project().documents == [], "no demo installed: an empty project"
    write_pairs(res / "demo", 3)
    first = app.demo_project()  # the demo data arrived: the empty demo gets it
    assert len(first.documents) == 3 and not first.is_dirty()
    assert all(d.labels.data.any() for d in first.documents)
    first.documents[0].labels.data[:] = 0  # the user's work in the demo...
    first.documents[0].revision += 1
    first.save()
    again = app.demo_project()
    assert len(again.documents) == 3
    assert not again.documents[0].labels.data.any(), "...is kept: the demo is not re-imported"


def test_autosave_failure_is_reported_once(qtbot, tmp_path, monkeypatch):
    from usgen_desktop.errors import UsgenError

    win = open_window(qtbot, saved_project(tmp_path))
    errors: list[str] = []
    win.autosaver.failed.disconnect()
    win.autosaver.failed.connect(errors.append)

    def broken():
        raise UsgenError("Could not autosave into '/x' (disk full).")

    monkeypatch.setattr(win.project, "autosave", broken)
    drag(qtbot, win, [(20.0, 50.0), (60.0, 50.0)])
    assert win.autosaver.tick() == 0
    drag(qtbot, win, [(20.0, 70.0), (60.0, 70.0)])
    assert win.autosaver.tick() == 0
    assert errors == ["Could not autosave into '/x' (disk full)."], "one dialog, not one per tick"


def test_selftest_flag_runs_the_selftest_without_a_window(monkeypatch):
    import sys
    import types

    from usgen_desktop.gui import app

    fake = types.ModuleType("usgen_desktop.selftest")
    fake.run_selftest = lambda: 3
    monkeypatch.setitem(sys.modules, "usgen_desktop.selftest", fake)
    assert app.main(["--selftest"]) == 3


def test_bad_inputs_each_get_one_sentence(qtbot, tmp_path, monkeypatch):
    from usgen_desktop.errors import ExportError
    from usgen_desktop.gui.export_dialog import ExportDialog

    shown: list[list[str]] = []
    errors: list[str] = []
    monkeypatch.setattr(project_io, "show_problems",
                        lambda parent, title, intro, problems: shown.append(list(problems)))
    win = open_window(qtbot, saved_project(tmp_path))
    monkeypatch.setattr(win, "show_error", errors.append)
    good = tmp_path / "ok.png"
    cv2.imwrite(str(good), lesion_pair(40, 50)[0])
    (tmp_path / "notes.xyz").write_text("hello")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    docs = win.import_paths([good, tmp_path / "notes.xyz", tmp_path / "cut.png"])
    assert [d.name for d in docs] == ["ok"], "the good file goes in, the rest is reported"
    assert len(shown) == 1 and len(shown[0]) == 2
    assert all("\n" not in p and "Traceback" not in p for p in shown[0])
    assert not win.open_project(tmp_path / "nowhere")
    assert len(errors) == 1 and "project" in errors[0]
    # an export into a "folder" that is a file is refused with one sentence
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    dlg = ExportDialog(None, win.project)
    qtbot.addWidget(dlg)
    dlg.folder.setText(str(blocker))
    dlg.format.setCurrentIndex(dlg.format.findData("folder"))
    with pytest.raises(ExportError) as info:
        dlg.export()
    assert "\n" not in str(info.value)


def test_new_project_from_the_menu(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QDialog

    from usgen_desktop.core.labels import load_preset

    target = tmp_path / "fresh"

    class FakeDialog:
        def __init__(self, parent, base):  # noqa: ANN001
            pass

        def exec(self):
            return QDialog.DialogCode.Accepted

        def values(self):
            return target, load_preset("hc18"), "Fresh"

    monkeypatch.setattr(project_io, "NewProjectDialog", FakeDialog)
    win = open_window(qtbot, saved_project(tmp_path), save="save")
    drag(qtbot, win, [(20.0, 50.0), (60.0, 50.0)])
    win.act_new.trigger()
    assert win.asked == ["save"], "unsaved work is offered for saving first"
    assert win.project.folder == target and win.project.name == "Fresh"
    assert win.label_panel.list.count() == 3 and win.current_document() is None
    assert Project.open(tmp_path / "proj").documents[0].labels.data[50, 40] == 1
    errors: list[str] = []
    monkeypatch.setattr(win, "show_error", errors.append)
    win.act_new.trigger()  # the same folder again: refused, current project kept
    assert len(errors) == 1 and "already holds a project" in errors[0]
    assert win.project.folder == target


def test_recent_projects_menu_reopens_a_project(qtbot, tmp_path):
    from usgen_desktop.gui import app

    settings = app.app_settings()
    first = saved_project(tmp_path)
    second = Project.create(tmp_path / "other", schema3(), name="other")
    win = MainWindow(first, settings=settings, load_panels=False)
    win.ask_save_changes = lambda: "discard"
    qtbot.addWidget(win)
    win.set_project(second)
    assert win.recent_projects()[:2] == [str(second.folder), str(first.folder)]
    win._fill_recent_menu()
    acts = win.recent_menu.actions()
    assert not acts[0].isEnabled(), "the open project is not offered again"
    acts[1].trigger()
    assert win.project.folder == first.folder
