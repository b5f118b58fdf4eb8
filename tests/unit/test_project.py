"""The project store: save/open roundtrip, incremental saves, autosave and restore."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import lesion_pair
from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import LabelMap, load_preset
from usgen_desktop.errors import DatasetError
from usgen_desktop.io.project import Project, default_projects_dir


def _doc(seed: int = 0, sixteen: bool = False, **kw) -> Document:
    img, mask = lesion_pair(seed=seed)
    px = img.astype(np.uint16) * 257 + seed if sixteen else img
    return Document(
        labels=LabelMap((mask > 0).astype(np.uint8)),
        schema=load_preset("busi"),
        image=UltrasoundImage(px, pixel_spacing=(0.1, 0.2) if sixteen else None),
        name=f"case{seed}",
        tags={"class": "benign"},
        **kw,
    )


def test_roundtrip_keeps_pixels_labels_and_metadata(tmp_path):
    schema = load_preset("busi")
    p = Project.create(tmp_path / "p", schema, name="My study")
    d8, d16 = _doc(0), _doc(1, sixteen=True, provenance={"seed": np.int64(7), "backend": "speckle"})
    d16.labels.data[3:9, 4:12] = 5
    label_only = Document.blank(40, 50, schema, name="waiting", parent=d8.uid)
    label_only.labels.data[10:20, 10:20] = 1
    p.add([d8, d16, label_only])
    p.save()

    q = Project.open(tmp_path / "p")
    assert q.name == "My study" and q.schema == schema and not q.problems
    assert [d.uid for d in q.documents] == [d8.uid, d16.uid, label_only.uid]
    for a in (d8, d16, label_only):
        b = q.get(a.uid)
        assert b.labels == a.labels and b.name == a.name and b.tags == a.tags
        assert b.parent == a.parent
        if a.image is None:
            assert b.image is None
        else:
            assert b.image.pixels.dtype == a.image.pixels.dtype
            assert np.array_equal(b.image.pixels, a.image.pixels)
    assert q.get(d16.uid).image.pixel_spacing == (0.1, 0.2)
    assert q.get(d16.uid).provenance == {"seed": 7, "backend": "speckle"}
    meta = json.loads((tmp_path / "p" / "project.json").read_text())
    assert meta["documents"][2]["image"] is None


def test_save_writes_only_changed_label_maps(tmp_path):
    p = Project.create(tmp_path / "p", load_preset("busi"))
    a, b = _doc(0), _doc(1)
    p.add([a, b])
    p.save()
    la, lb = (tmp_path / "p" / "labels" / f"{d.uid}.png" for d in (a, b))
    os.utime(la, (1, 1))
    os.utime(lb, (1, 1))
    b.paint_disk((20, 20), 4, 1)
    p.save()
    assert la.stat().st_mtime == 1 and lb.stat().st_mtime != 1
    assert Project.open(tmp_path / "p").get(b.uid).labels == b.labels
    assert not list((tmp_path / "p").rglob("*.usgen-tmp"))


def test_remove_deletes_files_on_save(tmp_path):
    p = Project.create(tmp_path / "p", load_preset("busi"))
    a, b = _doc(0), _doc(1)
    p.add([a, b])
    p.save()
    p.remove(a.uid)
    with pytest.raises(KeyError):
        p.get(a.uid)
    p.save()
    assert not (tmp_path / "p" / "images" / f"{a.uid}.png").exists()
    assert [d.uid for d in Project.open(tmp_path / "p").documents] == [b.uid]


def test_autosave_and_restore_after_crash(tmp_path):
    p = Project.create(tmp_path / "p", load_preset("busi"))
    a = _doc(0)
    p.add([a])
    p.save()
    assert not p.has_autosave() and p.autosave() == 0
    a.paint_line((5, 5), (60, 40), 3, 1)
    unsaved = _doc(2)  # imported after the last save, then the app dies
    p.add([unsaved])
    assert p.autosave() == 2
    assert p.autosave() == 0  # nothing changed since
    # "crash": reopen from disk
    q = Project.open(tmp_path / "p")
    assert q.has_autosave()
    assert q.get(a.uid).labels != a.labels
    assert q.restore_autosave() == 2
    assert q.get(a.uid).labels == a.labels
    assert np.array_equal(q.get(unsaved.uid).image.pixels, unsaved.image.pixels)
    q.get(a.uid).undo()  # the restore is one undo step
    assert q.get(a.uid).labels != a.labels
    q.get(a.uid).redo()
    q.save()
    assert not q.has_autosave()
    r = Project.open(tmp_path / "p")
    assert r.get(a.uid).labels == a.labels and len(r.documents) == 2


def test_discard_autosave(tmp_path):
    p = Project.create(tmp_path / "p", load_preset("busi"))
    a = _doc(0)
    p.add([a])
    p.save()
    a.paint_disk((10, 10), 3, 1)
    p.autosave()
    q = Project.open(tmp_path / "p")
    q.discard_autosave()
    assert not q.has_autosave() and q.restore_autosave() == 0


def test_open_errors_are_one_sentence(tmp_path):
    with pytest.raises(DatasetError, match="not a USGen project"):
        Project.open(tmp_path)
    (tmp_path / "project.json").write_text("{broken")
    with pytest.raises(DatasetError, match="damaged"):
        Project.open(tmp_path)
    with pytest.raises(DatasetError, match="already holds a project"):
        Project.create(tmp_path, load_preset("busi"))


def test_damaged_document_is_a_problem_not_a_failure(tmp_path):
    p = Project.create(tmp_path / "p", load_preset("busi"))
    a, b = _doc(0), _doc(1)
    p.add([a, b])
    p.save()
    (tmp_path / "p" / "images" / f"{a.uid}.png").write_bytes(b"\x89PNG\r\n junk")
    q = Project.open(tmp_path / "p")
    assert [d.uid for d in q.documents] == [b.uid]
    assert len(q.problems) == 1 and "case0" in q.problems[0]


def test_default_projects_dir_is_under_user_data(tmp_path):
    assert default_projects_dir() == default_projects_dir().parent / "projects"
    assert str(default_projects_dir()).startswith(os.environ["USGEN_DATA_DIR"])


def test_label_only_document_gets_its_generated_image(tmp_path):
    schema = load_preset("busi")
    p = Project.create(tmp_path / "p", schema)
    doc = Document.blank(40, 50, schema, name="waiting")
    p.add([doc])
    p.save()
    assert not (tmp_path / "p" / "images" / f"{doc.uid}.png").exists()
    assert not p.is_dirty()
    doc.image = UltrasoundImage(np.full((40, 50), 77, np.uint8))
    doc.provenance = {"seed": 3, "backend": "speckle"}
    assert p.is_dirty()
    p.save()
    back = Project.open(tmp_path / "p").get(doc.uid)
    assert back.image is not None and int(back.image.pixels[0, 0]) == 77
    assert back.provenance == {"seed": 3, "backend": "speckle"}


def test_a_crash_mid_save_keeps_the_last_good_project(tmp_path, monkeypatch):
    p = Project.create(tmp_path / "p", load_preset("busi"))
    a = _doc(0)
    p.add([a])
    p.save()
    before = (tmp_path / "p" / "project.json").read_text()
    a.paint_disk((30, 30), 6, 1)
    p.add([_doc(1)])
    import usgen_desktop.io.project as store

    def boom(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "write_text_atomic", boom)
    with pytest.raises(Exception, match="No space left"):
        p.save()
    assert (tmp_path / "p" / "project.json").read_text() == before
    assert [d.uid for d in Project.open(tmp_path / "p").documents] == [a.uid]


def test_panel_settings_are_saved_with_the_project(tmp_path):
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.io.project import Project

    project = Project.create(tmp_path / "p", load_preset("busi"))
    assert not project.is_dirty()
    project.settings["generate"] = {"lora": "/models/lora", "strength": 0.3, "ti_token": "<us>"}
    assert project.is_dirty()  # a changed recipe asks to be saved like a changed mask
    project.save()
    assert not project.is_dirty()
    again = Project.open(tmp_path / "p")
    assert again.settings == project.settings and not again.is_dirty()
