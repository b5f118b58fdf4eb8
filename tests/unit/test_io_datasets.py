"""Dataset layouts detected automatically, built in temp folders the way users get them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import lesion_pair
from usgen_desktop.core.tasks import CancelToken, Progress
from usgen_desktop.errors import Cancelled, DatasetError
from usgen_desktop.io import open_dataset


def _blob(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _save(path, arr_or_image):
    """Write an array or a PIL image (mode '1' masks), making folders as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = arr_or_image if isinstance(arr_or_image, Image.Image) else Image.fromarray(arr_or_image)
    im.save(path)


def _busi_download(root):
    """Dataset_BUSI_with_GT as downloaded: RGB images, '1'/RGB/RGBA masks, extra _mask_1."""
    base = root / "Dataset_BUSI_with_GT"
    img, _ = lesion_pair(60, 80, seed=1)
    rgb = np.dstack([img] * 3)
    a, b = _blob(60, 80, 5, 20, 5, 30), _blob(60, 80, 30, 50, 40, 70)
    _save(base / "benign" / "benign (2).png", rgb)
    _save(base / "benign" / "benign (2)_mask.png", Image.fromarray(a).convert("1"))
    rgba = np.dstack([b * 255] * 3 + [np.full(b.shape, 255)]).astype(np.uint8)
    _save(base / "benign" / "benign (2)_mask_1.png", rgba)
    _save(base / "benign" / "benign (10).png", rgb)
    _save(base / "benign" / "benign (10)_mask.png", (a * 255).astype(np.uint8))
    _save(base / "malignant" / "malignant (1).png", rgb)
    _save(base / "malignant" / "malignant (1)_mask.png", np.dstack([b * 255] * 3).astype(np.uint8))
    _save(base / "normal" / "normal (1).png", rgb)
    _save(base / "normal" / "normal (1)_mask.png", np.zeros((60, 80, 3), np.uint8))
    return a, b


def test_busi_download_layout_ors_extra_masks(tmp_path):
    a, b = _busi_download(tmp_path)
    for root in (tmp_path, tmp_path / "Dataset_BUSI_with_GT"):  # wrapper folder or the folder
        res = open_dataset(root)
        assert res.layout == "busi_download" and res.schema.name == "busi"
        assert not res.problems
        names = [d.name for d in res.documents]
        assert names == ["benign (2)", "benign (10)", "malignant (1)", "normal (1)"]
        docs = {d.name: d for d in res.documents}
        assert np.array_equal(docs["benign (2)"].labels.data, (a | b).astype(np.uint8))
        assert np.array_equal(docs["malignant (1)"].labels.data, b.astype(np.uint8))
        assert not docs["normal (1)"].has_mask
        assert [d.klass for d in res.documents] == ["benign", "benign", "malignant", "normal"]
        assert not any(d.image.was_color for d in res.documents)
        assert all(d.schema is res.schema for d in res.documents)


def test_image_mask_folders_match_by_stem_and_report_problems(tmp_path):
    img, mask = lesion_pair(40, 50, seed=2)
    _save(tmp_path / "images" / "a.png", img)
    _save(tmp_path / "masks" / "a.png", mask)  # same stem
    _save(tmp_path / "images" / "b.png", img)
    _save(tmp_path / "masks" / "b_mask.png", mask)  # <stem>_mask
    _save(tmp_path / "images" / "c.png", img)  # no mask
    _save(tmp_path / "images" / "d.png", img)
    _save(tmp_path / "masks" / "d.png", np.zeros((20, 20), np.uint8))  # wrong size
    (tmp_path / "images" / "e.png").write_bytes(b"garbage")  # corrupt
    _save(tmp_path / "masks" / "zzz.png", mask)  # no image
    res = open_dataset(tmp_path)
    assert res.layout == "image_mask_folders"
    docs = {d.name: d for d in res.documents}
    assert sorted(docs) == ["a", "b", "c"]
    assert docs["a"].labels.ids() == [0, 1] and docs["a"].labels == docs["b"].labels
    assert not docs["c"].has_mask
    text = " | ".join(res.problems)
    assert "'c.png' has no mask" in text
    assert "20x20" in text and "50x40" in text  # d: both sizes named
    assert "e.png" in text and "zzz.png" in text
    assert len(res.problems) == 4
    assert all("\n" not in p for p in res.problems)


def test_class_folders_with_manifest_groups(tmp_path):
    img, mask = lesion_pair(40, 50, seed=4)
    for klass in ("benign", "malignant", "normal"):
        _save(tmp_path / klass / "images" / f"{klass} (1).png", img)
        _save(tmp_path / klass / "masks" / f"{klass} (1)_mask.png", mask)
    (tmp_path / "manifest.csv").write_text(
        "image,class,group\n"
        "benign/images/benign (1).png,benign,g7\n"
        "malignant/images/malignant (1).png,malignant,g7\n"
    )
    res = open_dataset(tmp_path)
    assert res.layout == "class_folders" and res.schema.name == "busi"
    docs = {d.name: d for d in res.documents}
    # "annotated": a mask file came with it (the export's rule for empty masks)
    assert docs["benign (1)"].tags == {"class": "benign", "group": "g7", "annotated": True}
    assert docs["malignant (1)"].tags["group"] == "g7"
    assert "group" not in docs["normal (1)"].tags


def test_manifest_subject_column_is_the_group(tmp_path):
    """HC18's manifest names each image's subject: a patient's images must stay on one side
    of a held-out split, so the subject is the group when there is no group column."""
    img, mask = lesion_pair(40, 50, seed=4)
    for name in ("010_HC", "010_2HC", "011_HC"):
        _save(tmp_path / "images" / f"{name}.png", img)
        _save(tmp_path / "masks" / f"{name}.png", mask)
    (tmp_path / "manifest.csv").write_text(
        "image,subject,pixel_mm\n"
        "images/010_HC.png,010,0.1\nimages/010_2HC.png,010,0.1\nimages/011_HC.png,011,0.1\n")
    docs = {d.name: d for d in open_dataset(tmp_path).documents}
    assert docs["010_HC"].tags["group"] == docs["010_2HC"].tags["group"] == "010"
    assert docs["011_HC"].tags["group"] == "011"


def test_other_classes_get_a_generic_schema_with_every_id(tmp_path):
    img, _ = lesion_pair(40, 50, seed=5)
    idx = np.zeros((40, 50), np.uint8)
    idx[:10], idx[20:30] = 1, 3
    _save(tmp_path / "liver" / "images" / "x.png", img)
    _save(tmp_path / "liver" / "masks" / "x.png", idx)
    res = open_dataset(tmp_path)
    assert res.layout == "class_folders" and res.schema.name == "generic"
    assert {1, 3} <= set(res.schema.ids) and "liver" in res.schema.classes
    assert res.documents[0].labels.ids() == [0, 1, 3]


def test_hc18_outlines_are_filled(tmp_path):
    img, _ = lesion_pair(80, 100, seed=6)
    solid = np.zeros((80, 100), np.uint8)
    cv2.ellipse(solid, (50, 40), (30, 20), 10, 0, 360, 1, -1)
    line = np.zeros((80, 100, 3), np.uint8)
    cv2.ellipse(line, (50, 40), (30, 20), 10, 0, 360, (255, 255, 255), 1)
    for n in ("000", "001"):
        _save(tmp_path / f"{n}_HC.png", img)
        _save(tmp_path / f"{n}_HC_Annotation.png", line)
    res = open_dataset(tmp_path)
    assert res.layout == "hc18" and res.schema.name == "hc18"
    head = res.documents[0].labels.data
    assert head.max() == 1 and abs(int(head.sum()) - int(solid.sum())) < 0.06 * solid.sum()


def test_nnunet_dataset(tmp_path):
    img, _ = lesion_pair(40, 50, seed=7)
    lab = np.zeros((40, 50), np.uint8)
    lab[5:15], lab[20:30] = 1, 2
    root = tmp_path / "Dataset007_Thyroid"
    for case in ("t_001", "t_002"):
        _save(root / "imagesTr" / f"{case}_0000.png", img)
        _save(root / "labelsTr" / f"{case}.png", lab)
    _save(root / "imagesTs" / "t_100_0000.png", img)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "US"}, "labels": {"background": 0, "nodule": 1, "gland": 2},
        "numTraining": 2, "file_ending": ".png",
    }))
    for path in (root, tmp_path):  # the dataset folder, or nnUNet_raw holding only it
        res = open_dataset(path)
        assert res.layout == "nnunet_v2" and not res.problems
        assert [d.name for d in res.documents] == ["t_001", "t_002", "t_100"]
        assert res.schema.by_id(1).name == "nodule" and res.schema.by_id(2).name == "gland"
        assert np.array_equal(res.documents[0].labels.data, lab)
        assert res.documents[2].tags["split"] == "test" and not res.documents[2].has_mask


def test_images_only_and_single_file(tmp_path):
    img, mask = lesion_pair(30, 40, seed=8)
    for n in ("x", "y"):
        _save(tmp_path / "plain" / f"{n}.png", img)
    res = open_dataset(tmp_path / "plain")
    assert res.layout == "images_only" and len(res.documents) == 2
    assert not any(d.has_mask for d in res.documents)
    _save(tmp_path / "one" / "scan.png", img)
    _save(tmp_path / "one" / "scan_mask.png", mask)
    single = open_dataset(tmp_path / "one" / "scan.png")
    assert single.layout == "single_image" and single.documents[0].labels.ids() == [0, 1]


def test_sidecar_sets_schema_and_classes(tmp_path):
    img, mask = lesion_pair(30, 40, seed=9)
    _save(tmp_path / "p.png", img)
    _save(tmp_path / "p_mask.png", mask)
    _save(tmp_path / "q.png", img)
    (tmp_path / "usgen.json").write_text(json.dumps({"schema": "busi",
                                                     "classes": {"p": "malignant"}}))
    res = open_dataset(tmp_path)
    assert res.schema.name == "busi"
    assert {d.name: d.klass for d in res.documents} == {"p": "malignant", "q": None}


def test_empty_and_imageless_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match="no images"):
        open_dataset(tmp_path / "docs")
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope")


def test_progress_and_cancel(tmp_path):
    img, _ = lesion_pair(30, 40)
    for i in range(6):
        _save(tmp_path / f"i{i}.png", img)
    seen: list[Progress] = []
    open_dataset(tmp_path, progress=seen.append)
    assert seen[-1].done == seen[-1].total == 6
    token = CancelToken()

    def cancel_soon(p: Progress) -> None:
        if p.done >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        open_dataset(tmp_path, progress=cancel_soon, cancel=token)


def test_hc18_download_with_split_folders_and_pixel_size_csv(tmp_path):
    img, _ = lesion_pair(80, 100, seed=10)
    line = np.zeros((80, 100), np.uint8)
    cv2.ellipse(line, (50, 40), (30, 20), 0, 0, 360, 255, 1)
    _save(tmp_path / "training_set" / "000_HC.png", img)
    _save(tmp_path / "training_set" / "000_HC_Annotation.png", line)
    _save(tmp_path / "test_set" / "100_HC.png", img)
    (tmp_path / "training_set_pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.0691358,44.3\n"
    )
    res = open_dataset(tmp_path)
    assert res.layout == "hc18" and res.schema.name == "hc18"
    docs = {d.name: d for d in res.documents}
    # a split, not a class; "annotated": the outline file came with it
    assert docs["000_HC"].tags == {"split": "training_set", "annotated": True}
    assert docs["000_HC"].image.pixel_spacing == pytest.approx((0.0691358, 0.0691358))
    assert docs["000_HC"].has_mask and not docs["100_HC"].has_mask


def test_folder_of_datasets_points_to_its_subfolders(tmp_path):
    img, mask = lesion_pair(30, 40)
    _save(tmp_path / "a" / "benign" / "images" / "x.png", img)
    _save(tmp_path / "b" / "benign" / "images" / "y.png", img)
    with pytest.raises(DatasetError, match=r"open one of its subfolders \(a, b\)"):
        open_dataset(tmp_path)


def test_a_project_folder_opens_as_a_project(tmp_path):
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.io import Project

    img, mask = lesion_pair(30, 40)
    project = Project.create(tmp_path / "p", load_preset("busi"))
    doc = Document(labels=LabelMap((mask > 0).astype(np.uint8)), schema=project.schema,
                   image=UltrasoundImage(img), name="mine", tags={"class": "benign"})
    project.add([doc])
    project.save()
    res = open_dataset(tmp_path / "p")
    assert res.layout == "usgen_project" and res.schema.name == "busi"
    assert [(d.uid, d.name, d.klass) for d in res.documents] == [(doc.uid, "mine", "benign")]
    assert res.documents[0].labels == doc.labels


def test_folder_of_extensionless_dicom_files(tmp_path):
    from tests.unit.test_io_readers import _write_dicom

    img, _ = lesion_pair(30, 40)
    for name in ("IM0001", "IM0002"):
        _write_dicom(tmp_path / name, img)
    (tmp_path / "README").write_text("not an image")
    res = open_dataset(tmp_path)
    assert res.layout == "images_only" and [d.name for d in res.documents] == ["IM0001", "IM0002"]
    assert res.documents[0].image.pixel_spacing == pytest.approx((0.2, 0.3))


def test_itksnap_label_file_in_the_root_names_the_labels(tmp_path):
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.io import write_itksnap_labels

    img, _ = lesion_pair(30, 40)
    lab = np.zeros((30, 40), np.uint8)
    lab[:10], lab[10:20] = 1, 3
    _save(tmp_path / "images" / "a.png", img)
    _save(tmp_path / "masks" / "a.png", lab)
    write_itksnap_labels(load_preset("echo"), tmp_path / "labels.txt")
    res = open_dataset(tmp_path)
    assert res.schema.by_id(1).name == "LV cavity" and res.schema.by_id(3).name == "myocardium"
