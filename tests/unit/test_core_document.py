"""The document model: painting, fill, polygon, lock, and bounded stroke undo."""

from __future__ import annotations

import numpy as np
import pytest

from usgen_desktop.core.document import Document
from usgen_desktop.core.history import History
from usgen_desktop.core.labels import Label, LabelMap, LabelSchema, load_preset
from usgen_desktop.errors import MaskMismatchError


def schema() -> LabelSchema:
    return LabelSchema(
        "t",
        (Label(0, "bg", (0, 0, 0)), Label(1, "a", (255, 0, 0)), Label(2, "b", (0, 255, 0))),
    )


def test_brush_stroke_is_one_undo_step_and_redo_restores():
    doc = Document.blank(200, 300, schema())
    doc.begin_stroke("brush")
    pts = [(20 + 10 * i, 50 + i) for i in range(20)]
    for a, b in zip(pts, pts[1:], strict=False):
        doc.paint_line(a, b, 5, 1)
    doc.end_stroke()
    painted = doc.labels.data.copy()
    assert painted[50:70, 20:210].any() and painted.sum() > 0
    assert len(doc.history) == 1
    doc.undo()
    assert not doc.labels.data.any()
    doc.redo()
    assert np.array_equal(doc.labels.data, painted)


def test_new_edit_clears_redo():
    doc = Document.blank(50, 50, schema())
    doc.paint_disk((10, 10), 3, 1)
    doc.undo()
    assert doc.history.can_redo()
    doc.paint_disk((30, 30), 3, 2)
    assert not doc.history.can_redo()


def test_undo_memory_scales_with_changed_pixels_not_image():
    doc = Document.blank(2048, 2048, schema())
    doc.paint_disk((1000, 1000), 4, 1)
    # A 9x9 disk: before+after of its box, far below the 4 MiB of the image.
    assert doc.history.nbytes < 1000


def test_history_is_bounded_but_holds_at_least_100_steps():
    doc = Document.blank(64, 64, schema())
    for i in range(150):
        doc.paint_disk((5, 5), 1, 1 + i % 2)  # alternating labels: every call changes
    assert len(doc.history) == 150
    h = History(max_steps=100)
    d = Document.blank(8, 8, schema(), history=h)
    for i in range(120):
        d.paint_disk((3, 3), 0.5, 1 + i % 2)
    assert len(h) == 100


def test_flood_fill_fills_only_the_connected_region():
    doc = Document.blank(40, 40, schema())
    doc.fill_polygon([(10, 10), (30, 10), (30, 30), (10, 30)], 1)
    doc.flood_fill(20, 20, 2)
    assert (doc.labels.data[12:28, 12:28] == 2).all()
    assert doc.labels.data[0, 0] == 0
    doc.flood_fill(0, 0, 1)
    assert doc.labels.data[0, 0] == 1 and doc.labels.data[20, 20] == 2


def test_polygon_fill_covers_the_triangle():
    doc = Document.blank(100, 100, schema())
    doc.fill_polygon([(10, 10), (90, 10), (10, 90)], 1)
    assert doc.labels.data[20, 20] == 1
    assert doc.labels.data[80, 80] == 0


def test_lock_keeps_other_labels():
    doc = Document.blank(50, 50, schema())
    doc.fill_polygon([(0, 0), (25, 0), (25, 49), (0, 49)], 2)
    doc.edit_lock = 1
    doc.paint_disk((25, 25), 10, 1)
    assert (doc.labels.data[:, :20] == 2).all()  # label 2 untouched
    assert doc.labels.data[25, 30] == 1
    doc.paint_disk((25, 25), 20, 0)  # erasing with the lock clears only label 1
    assert (doc.labels.data == 1).sum() == 0
    assert (doc.labels.data[:, :20] == 2).all()


def test_edits_notify_listeners_with_the_box():
    doc = Document.blank(100, 100, schema())
    boxes = []
    doc.subscribe(boxes.append)
    box = doc.paint_disk((50, 40), 3, 1)
    assert boxes == [box]
    y0, y1, x0, x1 = box
    assert y0 <= 40 < y1 and x0 <= 50 < x1


def test_mask_of_wrong_size_is_refused_with_a_sentence():
    from usgen_desktop.core.image import UltrasoundImage

    img = UltrasoundImage(np.zeros((10, 20), np.uint8))
    with pytest.raises(MaskMismatchError, match="20x10"):
        Document(labels=LabelMap.empty(10, 21), schema=schema(), image=img)


def test_rgb_image_becomes_gray_and_remembers_colour():
    from usgen_desktop.core.image import UltrasoundImage

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    img = UltrasoundImage(rgb)
    assert img.pixels.shape == (4, 5) and img.was_color
    assert 55 <= img.pixels[0, 0] <= 65


def test_presets_load_with_reference_ids():
    echo = load_preset("echo")
    assert [lab.name for lab in echo.labels] == [
        "outside fan", "LV cavity", "sector", "myocardium", "left atrium"
    ]
    assert echo.sector_id == 2
    busi = load_preset("busi")
    assert busi.classes == ("normal", "benign", "malignant")
    assert busi.tissue_for(1, "malignant").posterior < 1 < busi.tissue_for(1, "benign").posterior
    assert LabelSchema.from_json(busi.to_json()) == busi


def test_schema_edits_return_new_schemas():
    s = schema()
    s2 = s.renamed(1, "lesion").recoloured(1, (1, 2, 3)).with_visibility(2, False)
    assert s.by_id(1).name == "a"
    assert s2.by_id(1).name == "lesion" and s2.by_id(1).color == (1, 2, 3)
    lut = s2.lut()
    assert lut[2, 3] == 0 and lut[1, 3] == 255
