"""Issue 15's "wrong data, silently" points, driven through the real main window.

1. a new project starts with an empty gallery, preview and progress: old results cannot be
   accepted into it;
2. importing into the Demo project asks and opens a project of its own; the title names it;
3. one rule for normal (empty-mask) images, the same in the export dialog and `usgen export`;
4. kept variants lead to generating images for them, and export includes them afterwards.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog

from tests.conftest import lesion_pair
from tests.gui.test_generate_panel import fake_backend, lesion_doc  # noqa: F401
from usgen_desktop.core.deform import DeformParams
from usgen_desktop.core.labels import load_preset
from usgen_desktop.io.project import Project, default_projects_dir

pytestmark = pytest.mark.gui


def make_window(qtbot, project: Project):
    from usgen_desktop.gui.main_window import MainWindow
    from usgen_desktop.gui.panels.generate import GeneratePanel

    window = MainWindow(project)
    window.ask_save_changes = lambda: "discard"
    window.show_error = lambda msg: pytest.fail(f"error dialog: {msg}")
    qtbot.addWidget(window)
    window.show()
    panel = window.findChild(GeneratePanel)
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    return window, panel


def busi_folder(root):
    """A small BUSI download: a benign image with its mask, a normal one with an empty mask,
    and a class folder image without any mask file."""
    base = root / "Dataset_BUSI_with_GT"
    for cls, k, lesion in (("benign", 1, True), ("benign", 2, True), ("normal", 1, False)):
        img, mask = lesion_pair(60, 80, seed=k)
        (base / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(base / cls / f"{cls} ({k}).png")
        Image.fromarray(mask if lesion else np.zeros_like(mask)).save(
            base / cls / f"{cls} ({k})_mask.png")
    return root


def test_new_project_drops_the_old_results(qtbot, tmp_path, fake_backend):  # noqa: F811
    project = Project.create(tmp_path / "busi", load_preset("busi"), name="busi")
    project.add([lesion_doc("case1", "benign", 0)])
    window, panel = make_window(qtbot, project)
    panel.count.setValue(2)
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running and len(panel.gallery.items) == 2,
                    timeout=10_000)
    assert panel.progress.message.text() == "Done."
    assert panel.preview.image() is not None

    hc = Project.create(tmp_path / "hc18", load_preset("hc18"), name="hc18")
    window.set_project(hc, offer_restore=False)
    assert panel.gallery.items == {} and panel.gallery.list.count() == 0
    assert panel.preview.image() is None
    assert panel.progress.message.text() == "" and panel.progress.bar.value() == 0
    # nothing of the BUSI project can be accepted into the HC18 one
    assert panel.gallery.accept_all() == []
    assert hc.documents == []


def test_importing_into_the_demo_opens_a_project_of_its_own(qtbot, tmp_path, monkeypatch):
    from usgen_desktop.gui import app

    demo = app.demo_project()  # plain start without settings: the demo
    n_demo = len(demo.documents)
    window, _ = make_window(qtbot, demo)
    assert "Demo project (synthetic examples)" in window.windowTitle()
    asked: list[str] = []

    def answer(name: str) -> str:
        asked.append(name)
        return "new"

    window.ask_import_into_demo = answer
    monkeypatch.setattr("usgen_desktop.gui.project_io.show_problems", lambda *a, **k: None)
    data = busi_folder(tmp_path / "dl")
    docs = window.import_paths([data])
    assert asked == ["dl"] and len(docs) == 3
    assert window.project.folder != demo.folder
    assert window.project.folder.parent == default_projects_dir()
    assert len(window.project.documents) == 3
    assert window.project.name in window.windowTitle()
    assert "Demo" not in window.windowTitle()
    assert len(Project.open(demo.folder).documents) == n_demo  # the demo got nothing

    # cancelling leaves the demo as it was
    window.set_project(Project.open(demo.folder), offer_restore=False)
    window.ask_import_into_demo = lambda name: "cancel"
    assert window.import_paths([data]) == []
    assert len(window.project.documents) == n_demo


def test_normal_images_follow_one_rule_in_gui_and_cli(qtbot, tmp_path, monkeypatch):
    from usgen_desktop.cli.main import main as cli_main
    from usgen_desktop.gui.export_dialog import ExportDialog

    data = busi_folder(tmp_path / "dl")
    # an image that never had a mask: unlabelled in both
    img, _ = lesion_pair(60, 80, seed=9)
    project = Project.create(tmp_path / "p", load_preset("busi"), name="p")
    window, _ = make_window(qtbot, project)
    monkeypatch.setattr("usgen_desktop.gui.project_io.show_problems", lambda *a, **k: None)
    window.import_paths([data])
    Image.fromarray(img).save(tmp_path / "plain.png")
    window.import_paths([tmp_path / "plain.png"])
    window.save()
    dlg = ExportDialog(window, window.project)
    qtbot.addWidget(dlg)
    names = sorted(d.name for d in dlg.documents())
    assert "normal (1)" in names and "plain" not in names
    from usgen_desktop.export.pairs import LABELLED_RULE

    assert LABELLED_RULE in dlg.rule.text()
    assert "(3)" in dlg.all_masked.text()
    dlg.folder.setText(str(tmp_path / "gui_out"))
    dlg.format.setCurrentIndex(dlg.format.findData("folder"))
    dlg.export()

    assert cli_main(["export", "--from", str(window.project.folder), "--format", "folder",
                     "--out", str(tmp_path / "cli_out"), "-q"]) == 0

    def exported(folder):
        return sorted(json.loads(line)["name"]
                      for line in (folder / "manifest.jsonl").read_text().splitlines())

    assert exported(tmp_path / "gui_out") == exported(tmp_path / "cli_out") == names
    # the dataset folder itself, exported by the CLI, follows the same rule
    assert cli_main(["export", "--from", str(data), "--out", str(tmp_path / "raw_out"),
                     "-q"]) == 0
    assert exported(tmp_path / "raw_out") == names


def test_kept_variants_lead_to_images_and_into_the_export(qtbot, tmp_path,
                                                          fake_backend):  # noqa: F811
    from usgen_desktop.gui.export_dialog import ExportDialog

    project = Project.create(tmp_path / "busi", load_preset("busi"), name="busi")
    project.add([lesion_doc("case1", "benign", 0)])
    window, panel = make_window(qtbot, project)
    ctl = window.variants
    ctl.start([window.current_document()], 2, DeformParams(), seed=0, show_gallery=False)
    qtbot.waitUntil(lambda: ctl.last_gallery is not None, timeout=20_000)
    offered: list[int] = []
    ctl.ask_generate = lambda n: offered.append(n) or True
    panel.count.setValue(1)
    kept = ctl.last_gallery.kept_documents()
    ctl.last_gallery.kept_documents = lambda: kept  # the same objects, to follow them
    ctl._gallery_closed(ctl.last_gallery, QDialog.DialogCode.Accepted)  # "Keep checked"
    assert offered == [2], "keeping variants offers to generate images for them"
    assert panel.running or len(panel.gallery.items) > 0
    qtbot.waitUntil(lambda: not panel.running and len(panel.gallery.items) == 2,
                    timeout=10_000)
    assert {i.source.uid for i in panel.gallery.items.values()} == {d.uid for d in kept}
    n = len(window.project.documents)
    panel.gallery.accept_all()
    assert len(window.project.documents) == n, "the variants got their images, no copies"
    for v in kept:
        assert v.image is not None and v.provenance["variant"]["kind"] == "variant"
    dlg = ExportDialog(window, window.project)
    qtbot.addWidget(dlg)
    uids = {d.uid for d in dlg.documents()}
    assert {d.uid for d in kept} <= uids
    assert not dlg.waiting.isVisible() and "no image yet" not in dlg.waiting.text()


def test_detect_the_fan_in_all_images_with_a_review_grid(qtbot, tmp_path):
    """Point 6: one action detects every image's fan; a grid shows the overlays, the doubtful
    ones unchecked and first; the user fixes one in the editor, the fix holds for the whole
    scanner layout, and applying writes the fan into every checked label map."""
    from tests.fan_set import iou, make_case
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.gui.main_window import MainWindow
    from usgen_desktop.gui.panels import sector as sector_panel

    hc = load_preset("hc18")
    # one scanner layout (same size, same fan): two clean screens, one with a third of the
    # fan hidden by a black box (the detector cannot be sure there)
    cases = [make_case("curvilinear", (216, 320), clutter, seed=5)
             for clutter in (("text",), ("calipers", "depth_bar"), ("big_box",))]
    project = Project.create(tmp_path / "fans", hc, name="fans")
    docs = [Document(LabelMap.empty(216, 320), hc,
                     UltrasoundImage(np.ascontiguousarray(c.image[..., 0])), name=f"scan{i}")
            for i, c in enumerate(cases)]
    project.add(docs)
    window = MainWindow(project, load_panels=False)
    window.ask_save_changes = lambda: "discard"
    sector_panel.install(window)
    qtbot.addWidget(window)
    window.show()
    batch = window.fan_batch
    batch.start(show=False)
    qtbot.waitUntil(lambda: batch.dialog is not None, timeout=20_000)
    dlg = batch.dialog
    qtbot.addWidget(dlg)
    assert dlg.list.count() == 3
    first = dlg.list.item(0).data(Qt.ItemDataRole.UserRole)
    assert first == docs[2].uid, "the doubtful fit comes first"
    assert dlg.state[docs[2].uid] == "check"
    assert {d.uid for d in dlg.checked()} == {docs[0].uid, docs[1].uid}

    # the user fixes the doubtful one in the editor (the Fan handles tool edits the tags)
    dlg.fix(docs[2].uid)
    assert window.current_document() is docs[2]
    sector_panel.set_sector(docs[2], cases[2].sector)
    dlg.refresh()
    assert dlg.state[docs[2].uid] == "yours"
    assert (tmp_path / "fans" / "sector_layouts.json").is_file()  # remembered for the layout
    assert len(dlg.checked()) == 3
    assert dlg.apply_checked() == 3
    sid = hc.sector_id
    for doc, case in zip(docs, cases, strict=True):
        assert iou(doc.labels.data == sid, case.truth) > 0.95
    # a new image of that layout later gets the user's fan without asking
    later = make_case("curvilinear", (216, 320), ("text", "logo"), seed=5)
    doc4 = Document(LabelMap.empty(216, 320), hc,
                    UltrasoundImage(np.ascontiguousarray(later.image[..., 0])), name="scan4")
    window.add_documents([doc4])
    window.act_detect_sector.trigger()
    assert window.current_document() is doc4
    assert sector_panel.sector_of(doc4).to_dict() == cases[2].sector.to_dict()


def test_variants_dialog_speaks_of_the_anatomy_and_keeps_the_numbers(qtbot):
    from PySide6.QtWidgets import QLabel

    from usgen_desktop.gui.panels.variants import VariantsDialog

    dlg = VariantsDialog(None, 2)
    qtbot.addWidget(dlg)
    texts = " ".join(lab.text() for lab in dlg.findChildren(QLabel))
    assert "Bend its outlines" in texts and "256" not in texts and "px" not in texts
    assert "256²" in dlg.disp.toolTip() and "control points" in dlg.grid.toolTip()
    assert dlg.params() == DeformParams()  # the defaults are the reference's, unchanged


def test_a_map_without_fan_gets_one_sentence_and_a_detect_button(qtbot, tmp_path,
                                                                 fake_backend,  # noqa: F811
                                                                 monkeypatch):
    """Point 8: no long pop-up with a command line in it; one sentence and a button that
    starts the fan detection (with its review grid) for those label maps."""
    import sys

    from tests.fan_set import make_case
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.errors import MissingSectorError

    def no_fan(request):
        raise MissingSectorError("'scan' has no 'sector' region (the probe's fan), which this "
                                 "model needs.")

    monkeypatch.setattr(sys.modules["usgen_fake_backend"], "load", no_fan)
    hc = load_preset("hc18")
    case = make_case("curvilinear", (216, 320), ("text",), seed=3)
    project = Project.create(tmp_path / "hc", hc, name="hc")
    project.add([Document(LabelMap.empty(216, 320), hc,
                          UltrasoundImage(np.ascontiguousarray(case.image[..., 0])), name="scan")])
    window, panel = make_window(qtbot, project)
    asked: list[str] = []
    panel.ask_detect_fan = lambda sentence: asked.append(sentence) or True
    panel.count.setValue(1)
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)
    qtbot.waitUntil(lambda: bool(asked), timeout=5_000)
    assert len(asked) == 1 and asked[0].count(".") == 1 and "usgen" not in asked[0]
    qtbot.waitUntil(lambda: window.fan_batch.dialog is not None, timeout=20_000)
    qtbot.addWidget(window.fan_batch.dialog)
    assert window.fan_batch.dialog.list.count() == 1


def test_mixed_shapes_keep_their_captions_and_nothing_is_cut(qtbot, tmp_path,
                                                              fake_backend):  # noqa: F811
    """Point 7: portrait and landscape results share one tile size (uncropped, captions kept);
    captions and names fit; the model folder is whole in its tooltip."""
    from PySide6.QtGui import QFontMetrics

    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.gui.gallery import THUMB

    schema = load_preset("busi")
    docs = []
    for name, (h, w) in (("portrait", (160, 90)), ("landscape", (90, 160))):
        img, mask = lesion_pair(h, w)
        docs.append(Document(LabelMap((mask > 0).astype(np.uint8)), schema, UltrasoundImage(img),
                             name=name, tags={"class": "benign"}))
    project = Project.create(tmp_path / "p", schema, name="p")
    project.add(docs)
    window, panel = make_window(qtbot, project)
    panel.count.setValue(1)
    panel.scope.setCurrentIndex(panel.scope.findData("all"))
    panel.seed.setValue(2_000_000_000)  # the longest seeds
    panel.generate()
    qtbot.waitUntil(lambda: not panel.running and len(panel.gallery.items) == 2,
                    timeout=10_000)
    gal = panel.gallery
    sizes = {(gal.list.item(i).icon().availableSizes() or [None])[0].toTuple()
             for i in range(gal.list.count())}
    assert sizes == {(THUMB, THUMB)}, "every tile the same square, nothing cropped"
    gal.accept_all()
    fm = QFontMetrics(gal.list.font())
    cell = gal.list.gridSize().width()
    for i in range(gal.list.count()):
        text = gal.list.item(i).text()
        if text.startswith("▸"):
            continue
        assert fm.horizontalAdvance(text) < cell, text
    assert "seed" not in gal.generated_pane.caption and "seed" in gal.generated_pane.toolTip()
    panel.model_dir.setText("/a/very/long/path/to/models/sdm-default")
    assert panel.model_dir.toolTip() == "/a/very/long/path/to/models/sdm-default"
    assert window.image_list.view.textElideMode() == Qt.TextElideMode.ElideMiddle


def test_cancel_empties_the_bar(qtbot, tmp_path, fake_backend):  # noqa: F811
    """Point 9: after Cancel the bar does not stay at '51 %' beside 'Cancelled'."""
    project = Project.create(tmp_path / "busi", load_preset("busi"), name="busi")
    project.add([lesion_doc("case1", "benign", 0)])
    window, panel = make_window(qtbot, project)
    fake_backend["delay"] = 0.05
    panel.count.setValue(40)  # far more than a loaded machine finishes before the cancel
    panel.steps.setValue(5)
    panel.generate()
    qtbot.waitUntil(lambda: panel.progress.bar.value() > 0, timeout=10_000)
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.running, timeout=10_000)
    assert panel.progress.message.text().startswith("Cancelled")
    assert panel.progress.bar.value() == 0


def test_cli_export_prints_no_stray_bar_and_names_overwrite(tmp_path, capsys):
    """Point 9: no 'reading: 0pair' line; the not-empty error names --overwrite."""
    from usgen_desktop.cli.main import main as cli_main

    data = busi_folder(tmp_path / "dl")
    out = tmp_path / "out"
    assert cli_main(["export", "--from", str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    # a count of zero pairs, not a rate such as "60 pair/s" or "1.0 pair/s"
    assert not re.search(r"(?<![\w.])0 ?pair", err), err
    assert cli_main(["export", "--from", str(data), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_missing_xcb_libraries_are_one_sentence_naming_the_packages(monkeypatch, capsys):
    """Point 10: a bare Linux box gets the apt command, not Qt's abort."""
    import ctypes.util
    import sys

    from usgen_desktop.gui import app

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(ctypes.util, "find_library",
                        lambda name: None if name in ("xcb-cursor", "xkbcommon-x11") else name)
    assert app.main(["--demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith("sudo apt-get install libxcb-cursor0 libxkbcommon-x11-0")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # tests, headless use: not asked
    assert app.missing_xcb_packages() == []
