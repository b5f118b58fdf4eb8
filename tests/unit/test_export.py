"""Export layouts read back and checked; refusals, cancellation and resume."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.conftest import lesion_pair
from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import Label, LabelMap, LabelSchema, load_preset
from usgen_desktop.core.tasks import CancelToken, Progress
from usgen_desktop.errors import Cancelled, ExportError
from usgen_desktop.export import export_pairs
from usgen_desktop.io import open_dataset, read_itksnap_labels


def _read(path):
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None, path
    return arr


def _docs(n=4, schema=None, sixteen_first=True):
    schema = schema or load_preset("busi")
    docs = []
    for i in range(n):
        img, mask = lesion_pair(40 + i, 50, seed=i)
        px = img.astype(np.uint16) * 250 if (i == 0 and sixteen_first) else img
        docs.append(Document(
            labels=LabelMap((mask > 0).astype(np.uint8)), schema=schema,
            image=UltrasoundImage(px), name=f"benign ({i + 1})",
            tags={"class": "benign" if i % 2 else "malignant"},
        ))
    return docs


def _manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def _nnunet_integrity(ds):
    """The checks of nnU-Net v2's verify_dataset_integrity, for PNG (NaturalImage2DIO) data."""
    meta = json.loads((ds / "dataset.json").read_text())
    assert {"labels", "channel_names", "numTraining", "file_ending"} <= set(meta)
    ending = meta["file_ending"]
    label_files = sorted((ds / "labelsTr").glob(f"*{ending}"))
    assert len(label_files) == meta["numTraining"]
    expected = sorted(meta["labels"].values())
    assert expected == list(range(len(expected)))  # consecutive from 0
    for lf in label_files:
        case = lf.name[: -len(ending)]
        images = sorted((ds / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}"))
        assert len(images) == len(meta["channel_names"]), case
        seg = _read(lf)
        assert set(np.unique(seg)) <= set(expected)
        assert _read(images[0]).shape == seg.shape


def test_folder_export_reads_back_identical(tmp_path):
    docs = _docs()
    docs[1].labels.data[0:3, 0:3] = 0
    rep = export_pairs(docs, tmp_path / "out", "folder")
    out = tmp_path / "out"
    assert rep.count == 4 and rep.out_dir == out and not rep.skipped
    recs = _manifest(out)
    assert [r["name"] for r in recs] == [d.name for d in docs]
    for doc, rec in zip(docs, recs, strict=True):
        assert rec["image"] == f"images/{rec['case']}.png"
        img, lab = _read(out / rec["image"]), _read(out / rec["label"])
        assert img.dtype == doc.image.pixels.dtype and np.array_equal(img, doc.image.pixels)
        assert np.array_equal(lab, doc.labels.data)
        assert rec["class"] == doc.klass and rec["height"] == doc.shape[0]
        assert rec["schema"]["name"] == "busi"
    assert recs[0]["bit_depth"] == 16
    assert read_itksnap_labels(out / "labels.txt").by_id(1).name == "lesion"


def test_nnunet_export_remaps_gappy_ids_to_consecutive(tmp_path):
    schema = LabelSchema("gappy", (Label(0, "bg", (0, 0, 0)), Label(2, "cyst", (255, 0, 0)),
                                   Label(5, "wall", (0, 255, 0))))
    docs = _docs(3, schema)
    for d in docs:
        d.labels.data[d.labels.data == 1] = 5
        d.labels.data[:4, :4] = 2
    rep = export_pairs(docs, tmp_path, "nnunet", dataset_name="Cysts", dataset_id=12)
    ds = tmp_path / "Dataset012_Cysts"
    assert rep.out_dir == ds
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "US"}
    assert meta["labels"] == {"background": 0, "cyst": 1, "wall": 2}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".png"
    assert rep.label_mapping == {0: 0, 2: 1, 5: 2}
    recs = _manifest(ds)
    assert recs[0]["label_mapping"] == {"0": 0, "2": 1, "5": 2}
    for doc, rec in zip(docs, recs, strict=True):
        assert rec["image"] == f"imagesTr/{rec['case']}_0000.png"
        lab = _read(ds / "labelsTr" / f"{rec['case']}.png")
        expect = np.select([doc.labels.data == 2, doc.labels.data == 5], [1, 2], 0)
        assert np.array_equal(lab, expect)
        assert np.array_equal(_read(ds / rec["image"]), doc.image.pixels)
    _nnunet_integrity(ds)
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == \
        sorted(f"{r['case']}_0000.png" for r in recs)
    # USGen reads its own export back with names, classes and the exported ids.
    back = open_dataset(ds)
    assert back.layout == "nnunet_v2"
    assert [d.name for d in back.documents] == [d.name for d in docs]
    assert [d.klass for d in back.documents] == [d.klass for d in docs]
    assert back.schema.by_id(2).name == "wall"


def test_decathlon_export(tmp_path):
    docs = _docs(2)
    export_pairs(docs, tmp_path / "dec", "decathlon", dataset_name="BUSI")
    meta = json.loads((tmp_path / "dec" / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "lesion"}
    assert meta["numTraining"] == 2 and len(meta["training"]) == 2
    for entry in meta["training"]:
        assert (tmp_path / "dec" / entry["image"]).is_file()
        assert (tmp_path / "dec" / entry["label"]).is_file()


def test_generated_pairs_carry_provenance_and_imageless_docs_are_skipped(tmp_path):
    docs = _docs(2)
    docs[1].provenance = {"seed": 1234, "backend": "speckle", "parameters": {"steps": 20}}
    docs[1].parent = docs[0].uid
    waiting = Document.blank(30, 30, load_preset("busi"), name="to generate")
    rep = export_pairs([*docs, waiting], tmp_path / "o", "folder")
    assert rep.count == 2 and len(rep.skipped) == 1 and "to generate" in rep.skipped[0]
    rec = _manifest(tmp_path / "o")[1]
    assert rec["provenance"]["seed"] == 1234 and rec["provenance"]["backend"] == "speckle"
    assert rec["parent"] == docs[0].uid
    with pytest.raises(ExportError, match="nothing to export"):
        export_pairs([waiting], tmp_path / "p", "folder")


def test_never_overwrites_silently(tmp_path):
    out = tmp_path / "out"
    export_pairs(_docs(3), out, "folder")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_pairs(_docs(1), out, "folder")
    assert len(_manifest(out)) == 3
    rep = export_pairs(_docs(1), out, "folder", overwrite=True)
    assert rep.count == 1 and len(list((out / "images").iterdir())) == 1
    assert (out / "notes.txt").read_text() == "mine"  # only USGen's own files were replaced
    raw = tmp_path / "nnUNet_raw"  # holds other datasets: nnU-Net export goes inside it
    (raw / "Dataset001_Old").mkdir(parents=True)
    rep = export_pairs(_docs(1), raw, "nnunet", dataset_name="New")
    assert rep.out_dir == raw / "Dataset500_New" and (raw / "Dataset001_Old").is_dir()


def test_unwritable_target_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    with pytest.raises(ExportError) as info:
        export_pairs(_docs(1), blocker / "out", "folder")
    assert "\n" not in str(info.value) and "file" in str(info.value)
    with pytest.raises(ExportError, match="is a file"):
        export_pairs(_docs(1), blocker, "folder")
    with pytest.raises(ExportError, match="Unknown export format"):
        export_pairs(_docs(1), tmp_path / "x", "zip")


def test_cancel_midway_leaves_complete_pairs_and_resume_finishes(tmp_path):
    docs = _docs(6)
    out = tmp_path / "out"
    token = CancelToken()

    def cancel_after_two(p: Progress) -> None:
        if p.done >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        export_pairs(docs, out, "nnunet", dataset_name="R", progress=cancel_after_two,
                     cancel=token)
    ds = out / "Dataset500_R"
    recs = _manifest(ds)
    assert len(recs) == 2
    assert len(list((ds / "imagesTr").iterdir())) == 2 == len(list((ds / "labelsTr").iterdir()))
    _nnunet_integrity(ds)  # a cancelled export still trains as it is
    assert not list(ds.rglob("*usgen-tmp"))

    # Simulate a kill mid-pair as well: a stray image without its label, a torn manifest line.
    (ds / "imagesTr" / "stray_0000.png").write_bytes(b"partial")
    with open(ds / "manifest.jsonl", "a") as fh:
        fh.write('{"case": "torn", "ima')
    rep = export_pairs(docs, out, "nnunet", dataset_name="R")
    assert rep.resumed == 2 and rep.written == 4 and rep.count == 6
    recs = _manifest(ds)
    assert [r["uid"] for r in recs] == [d.uid for d in docs]
    assert len({r["case"] for r in recs}) == 6
    assert not (ds / "imagesTr" / "stray_0000.png").exists()
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 6
    _nnunet_integrity(ds)
    with pytest.raises(ExportError, match="not empty"):  # finished: no silent second run
        export_pairs(docs, out, "nnunet", dataset_name="R")


def test_case_ids_are_unique_and_safe(tmp_path):
    docs = _docs(3)
    for d in docs:
        d.name = "same name/with:odd chars"
    export_pairs(docs, tmp_path / "o", "nnunet", dataset_name="Dataset501_Me")
    cases = [r["case"] for r in _manifest(tmp_path / "o" / "Dataset501_Me")]
    assert len(set(cases)) == 3 and all(c.replace("_", "").isalnum() for c in cases)
    out = tmp_path / "Dataset502_Here"  # a DatasetNNN_Name target is used as is
    export_pairs(docs, out, "nnunet")
    assert (out / "dataset.json").is_file()


def test_a_document_selected_twice_exports_once(tmp_path):
    docs = _docs(2)
    rep = export_pairs([docs[0], docs[1], docs[0]], tmp_path / "o", "folder")
    assert rep.count == 2 and len(_manifest(tmp_path / "o")) == 2


def test_resume_after_reopening_the_dataset_matches_by_source(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for i in range(5):
        img, mask = lesion_pair(32, 40, seed=i)
        cv2.imwrite(str(src / "images" / f"c{i}.png"), img)
        cv2.imwrite(str(src / "masks" / f"c{i}.png"), mask)
    token = CancelToken()

    def stop(p: Progress) -> None:
        if p.done >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        export_pairs(open_dataset(src).documents, tmp_path / "o", "folder", progress=stop,
                     cancel=token)
    again = open_dataset(src).documents  # a new session: new document ids
    rep = export_pairs(again, tmp_path / "o", "folder")
    assert (rep.resumed, rep.written, rep.count) == (2, 3, 5)
    assert sorted(r["case"] for r in _manifest(tmp_path / "o")) == [f"c{i}" for i in range(5)]


def test_nnunet_declares_only_labels_the_maps_use(tmp_path):
    docs = _docs(2, load_preset("hc18"))  # hc18: 0 outside fan, 1 head, 2 sector (unused here)
    export_pairs(docs, tmp_path, "nnunet", dataset_name="Heads")
    meta = json.loads((tmp_path / "Dataset500_Heads" / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "fetal head": 1}
    export_pairs(docs, tmp_path / "f", "folder")  # the folder format keeps the whole schema
    assert read_itksnap_labels(tmp_path / "f" / "labels.txt").by_id(2).name == "sector"


def test_disk_full_midway_is_one_sentence_and_keeps_finished_pairs(tmp_path, monkeypatch):
    import errno

    import usgen_desktop.export.pairs as pairs_mod

    real = pairs_mod._write_pair
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(pairs_mod, "_write_pair", flaky)
    docs = _docs(4)
    with pytest.raises(ExportError, match="disk .* is full"):
        export_pairs(docs, tmp_path / "o", "folder")
    assert len(_manifest(tmp_path / "o")) == 2
    monkeypatch.setattr(pairs_mod, "_write_pair", real)
    rep = export_pairs(docs, tmp_path / "o", "folder")  # space freed: resume
    assert (rep.resumed, rep.count) == (2, 4)
