"""The gallery of generated images: compare each with its label map, accept, reject, redo.

Results are grouped beside the label map they were made from: the first tile of each group is
that label map, the tiles after it are its generated images. Clicking a tile shows it large,
side by side with the real image and the label map. An accepted result becomes a new
``Document`` (image = generated, labels = the exact label map, parent = the source's uid,
provenance = how it was made), so the editor's export writes the pair with its provenance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QKeySequence, QPainter, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import LabelSchema

THUMB = 112
_ROLE_ID = Qt.ItemDataRole.UserRole + 1  # GalleryItem.id; None on a label-map header tile
_ROLE_KEY = Qt.ItemDataRole.UserRole + 2  # uid of the source document (the group)
_ids = itertools.count(1)


# -- pictures -------------------------------------------------------------------------------
def gray_to_qimage(gray: np.ndarray) -> QImage:
    """A deep-copied QImage of a uint8 HxW array (the array may be freed afterwards)."""
    g = np.ascontiguousarray(gray, dtype=np.uint8)
    h, w = g.shape
    return QImage(g.data, w, h, g.strides[0], QImage.Format.Format_Grayscale8).copy()


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = a.shape[:2]
    return QImage(a.data, w, h, a.strides[0], QImage.Format.Format_RGB888).copy()


def label_colors(labels: np.ndarray, schema: LabelSchema | None) -> np.ndarray:
    """RGB rendering of a label map with the schema's colours (grey levels without one)."""
    if schema is not None:
        lut = schema.lut()[:, :3].copy()
    else:
        lut = np.zeros((256, 3), np.uint8)
        lut[1:] = np.linspace(80, 255, 255, dtype=np.uint8)[:, None]
    return lut[labels]


def overlay_outline(
    gray: np.ndarray, labels: np.ndarray, schema: LabelSchema | None
) -> np.ndarray:
    """The image in RGB with each label's border drawn in its colour (the fan edge too)."""
    rgb = np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=2)
    if labels.shape != rgb.shape[:2]:
        return rgb
    labels = np.asarray(labels)
    # only the border pixels are coloured, so look colours up there alone (cheap at 512²)
    right = np.zeros(labels.shape, labels.dtype)
    down = np.zeros(labels.shape, labels.dtype)
    right[:, :-1] = labels[:, 1:]
    down[:-1, :] = labels[1:, :]
    right[:, -1] = labels[:, -1]
    down[-1, :] = labels[-1, :]
    edge = (labels != right) | (labels != down)
    ys, xs = np.nonzero(edge)
    if len(ys) == 0:
        return rgb
    lut = label_colors(np.arange(256, dtype=np.uint8), schema)
    here = labels[ys, xs]
    there = np.maximum(right[ys, xs], down[ys, xs])
    ca, cb = lut[here], lut[there]
    # a border takes the colour of its labelled side (the brighter one where both are)
    use = np.where(ca.astype(int).sum(-1, keepdims=True) >= cb.astype(int).sum(-1, keepdims=True),
                   ca, cb)
    use[use.astype(int).sum(-1) == 0] = (255, 255, 0)
    rgb[ys, xs] = use
    return rgb


def thumbnail_arrays(gray: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Image and label map shrunk to fit ``size`` (area / nearest): outlines drawn at the
    thumbnail's own scale stay one crisp pixel instead of fading when shrunk."""
    import cv2

    h, w = gray.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale >= 1.0:
        return gray, labels
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    return (cv2.resize(gray, (tw, th), interpolation=cv2.INTER_AREA),
            cv2.resize(labels, (tw, th), interpolation=cv2.INTER_NEAREST))


class ImagePane(QWidget):
    """Paints one image scaled to fit (aspect kept) with a caption above it."""

    def __init__(self, caption: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = caption
        self._image: QImage | None = None
        self._placeholder = ""
        # the image scaled to the pane, made once per image and size: smooth-scaling a 512²
        # image on every repaint cost up to 27 ms of GUI time during a generation
        self._scaled: QPixmap | None = None
        self.setMinimumSize(96, 96)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: QImage | np.ndarray | None, placeholder: str = "") -> None:
        if isinstance(image, np.ndarray):
            image = gray_to_qimage(image) if image.ndim == 2 else rgb_to_qimage(image)
        self._image = image
        self._placeholder = placeholder
        self._scaled = None
        self.update()

    def image(self) -> QImage | None:
        return self._image

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        pal = self.palette()
        p.fillRect(self.rect(), pal.window())
        fm = p.fontMetrics()
        top = 0
        if self.caption:
            p.setPen(pal.windowText().color())
            # a narrow pane shortens the caption with "…" instead of cutting it off at both ends
            text = fm.elidedText(self.caption, Qt.TextElideMode.ElideRight, max(0, self.width() - 4))
            p.drawText(0, 0, self.width(), fm.height(), Qt.AlignmentFlag.AlignCenter, text)
            top = fm.height() + 2
        area = QRectF(0, top, self.width(), max(1, self.height() - top))
        p.fillRect(area, QColor(16, 16, 16))
        if self._image is None or self._image.isNull():
            p.setPen(QColor(160, 160, 160))
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, self._placeholder)
            return
        iw, ih = self._image.width(), self._image.height()
        scale = min(area.width() / iw, area.height() / ih)
        w, h = max(1, int(iw * scale)), max(1, int(ih * scale))
        if self._scaled is None or (self._scaled.width(), self._scaled.height()) != (w, h):
            mode = (Qt.TransformationMode.SmoothTransformation if scale < 1
                    else Qt.TransformationMode.FastTransformation)  # enlarged: crisp pixels
            self._scaled = QPixmap.fromImage(
                self._image.scaled(w, h, Qt.AspectRatioMode.IgnoreAspectRatio, mode))
        x = int(area.x() + (area.width() - w) / 2)
        y = int(area.y() + (area.height() - h) / 2)
        p.drawPixmap(x, y, self._scaled)


# -- pictures made off the GUI thread -------------------------------------------------------
@dataclass
class Rendered:
    """What the gallery shows of one result, as arrays. ``render`` is plain numpy/OpenCV, so
    the worker thread can make it as each result finishes and the GUI thread only wraps the
    arrays (outlining a 512² image on the GUI thread stalled it ~6 ms per result)."""

    thumb: np.ndarray  # gray, shrunk to fit THUMB
    thumb_outlined: np.ndarray  # RGB
    outlined: np.ndarray  # RGB, full size
    labels_rgb: np.ndarray  # RGB, full size
    labels_thumb: np.ndarray  # RGB, shrunk


def render(image: np.ndarray, labels: np.ndarray, schema: LabelSchema | None) -> Rendered:
    """Every picture of a result the gallery needs (thread-safe: no Qt)."""
    image = np.asarray(image, np.uint8)
    small, small_labels = thumbnail_arrays(image, labels, THUMB)
    return Rendered(
        thumb=small,
        thumb_outlined=overlay_outline(small, small_labels, schema),
        outlined=overlay_outline(image, labels, schema),
        labels_rgb=label_colors(labels, schema),
        labels_thumb=label_colors(small_labels, schema),
    )


# -- the model of the gallery ---------------------------------------------------------------
@dataclass
class GalleryItem:
    """One generated image and where it came from. ``status``: new | accepted."""

    result: Any  # synthesis.request.Result
    source: Document | None
    schema: LabelSchema | None
    klass: str | None = None
    status: str = "new"
    accepted_uid: str | None = None
    rendered: Rendered | None = None
    id: int = field(default_factory=lambda: next(_ids))

    def pictures(self) -> Rendered:
        """The rendered pictures, made now (on the calling thread) if nobody made them yet."""
        if self.rendered is None:
            self.rendered = render(self.result.image, self.result.label_map.data, self.schema)
        return self.rendered

    @property
    def seed(self) -> int | None:
        return self.result.provenance.get("seed")

    def source_key(self) -> str:
        return self.source.uid if self.source is not None else "?"


def document_from_result(item: GalleryItem) -> Document:
    """The new document an accepted result becomes: the generated image with the exact label
    map it was generated from, tagged with its class, linked to its source by ``parent``."""
    res = item.result
    src = item.source
    schema = item.schema or (src.schema if src is not None else None)
    if schema is None:
        raise ValueError("a gallery item needs a schema")
    tags: dict[str, Any] = {}
    if item.klass:
        tags["class"] = item.klass
    base = src.name if src is not None else "label map"
    backend = res.provenance.get("backend", "synthetic")
    provenance = dict(res.provenance)
    if "inpaint" in provenance and src is not None and src.image is not None \
            and src.image.source:
        provenance["source"] = str(src.image.source)  # the image it kept outside the region
    return Document(
        labels=res.label_map.copy(),
        schema=schema,
        image=UltrasoundImage(np.array(res.image, dtype=np.uint8, copy=True)),
        name=f"{base} · {backend} #{item.seed}",
        tags=tags,
        parent=src.uid if src is not None else None,
        provenance=provenance,
    )


def fill_waiting_source(item: GalleryItem) -> Document | None:
    """Give a label-map-only source (e.g. a kept variant) the generated image, when the label
    map is still the one it was generated from; returns that document, else None."""
    src, res = item.source, item.result
    if src is None or src.image is not None:
        return None
    if src.labels.shape != res.label_map.shape or not np.array_equal(src.labels.data,
                                                                     res.label_map.data):
        return None  # edited since: the image no longer matches it exactly
    src.image = UltrasoundImage(np.array(res.image, dtype=np.uint8, copy=True))
    if item.klass and not src.tags.get("class"):
        src.tags["class"] = item.klass
    # how the label map was made (a variant) stays, beside how its image was made
    src.provenance = {**dict(res.provenance), **({"variant": src.provenance}
                                                 if src.provenance else {})}
    src.revision += 1  # thumbnails, status text and autosave see the change
    return src


class GalleryWidget(QWidget):
    """Thumbnails grouped by label map, a large compare view, and Accept / Reject / Regenerate.

    ``accepted(Document)`` is emitted with each new document (the panel adds it to the
    project); ``regenerateRequested(GalleryItem)`` asks the panel for a new seed of that item.
    """

    accepted = Signal(object)
    regenerateRequested = Signal(object)
    countChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.items: dict[int, GalleryItem] = {}
        self._current: int | None = None
        self._outline = True

        self.real_pane = ImagePane("Real image")
        self.generated_pane = ImagePane("Generated")
        self.labels_pane = ImagePane("Label map")
        compare = QWidget()
        cl = QHBoxLayout(compare)
        cl.setContentsMargins(0, 0, 0, 0)
        for pane in (self.real_pane, self.generated_pane, self.labels_pane):
            cl.addWidget(pane, 1)

        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setGridSize(QSize(THUMB + 16, THUMB + 34))
        # one strip that scrolls sideways: label map, then its images, then the next group
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setWordWrap(True)
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.list.setMinimumHeight(THUMB + 56)
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.list.itemSelectionChanged.connect(self._update_buttons)

        self.outline_box = QCheckBox("Outline")
        self.outline_box.setToolTip("Draw the label map's borders over the generated images")
        self.outline_box.setChecked(True)
        self.outline_box.toggled.connect(self.set_outline)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Add the selected images to the project with their label "
                                      "maps and provenance (A)")
        self.reject_button = QPushButton("Reject")
        self.reject_button.setToolTip("Remove the selected images from the gallery (R)")
        self.regenerate_button = QPushButton("New seed")
        self.regenerate_button.setToolTip("Generate the selected image again with a new seed (N)")
        self.accept_all_button = QPushButton("Accept all")
        self.accept_button.clicked.connect(self.accept_selected)
        self.reject_button.clicked.connect(self.reject_selected)
        self.regenerate_button.clicked.connect(self.regenerate_selected)
        self.accept_all_button.clicked.connect(self.accept_all)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        for w in (self.accept_button, self.reject_button, self.regenerate_button,
                  self.accept_all_button):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.outline_box)

        browse = QWidget()
        bl = QVBoxLayout(browse)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addLayout(bar)
        bl.addWidget(self.list, 1)
        # thumbnails beside the large compare view: a bottom dock is wide, not tall
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(browse)
        split.addWidget(compare)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(split)

        for key, slot in (("A", self.accept_selected), ("R", self.reject_selected),
                          ("N", self.regenerate_selected), ("Delete", self.reject_selected)):
            sc = QShortcut(QKeySequence(key), self.list)
            sc.setContext(Qt.ShortcutContext.WidgetShortcut)
            sc.activated.connect(slot)
        self._update_buttons()

    # -- adding ---------------------------------------------------------------------------
    def add_result(
        self, result: Any, source: Document | None, schema: LabelSchema | None = None,
        klass: str | None = None, select: bool = False, rendered: Rendered | None = None,
    ) -> GalleryItem:
        """Show ``result`` after the other images of its label map (header tile first);
        ``rendered`` are its pictures when the worker already made them."""
        item = GalleryItem(result, source, schema or (source.schema if source else None), klass,
                           rendered=rendered)
        self.items[item.id] = item
        key = item.source_key()
        row = self._group_end(key)
        if row is None:  # a new group starts with its label map
            self.list.addItem(self._header_tile(item))
            row = self.list.count()
        tile = QListWidgetItem(self._icon(item), self._caption(item))
        tile.setData(_ROLE_ID, item.id)
        tile.setData(_ROLE_KEY, key)
        tile.setToolTip(self._tooltip(item))
        self.list.insertItem(row, tile)
        if select or self.list.currentItem() is None:
            self.list.setCurrentItem(tile)
        self._update_buttons()
        self.countChanged.emit(len(self.items))
        return item

    def replace_result(self, item_id: int, result: Any,
                       rendered: Rendered | None = None) -> GalleryItem | None:
        """Swap in a regenerated result for an item, keeping its place."""
        item = self.items.get(item_id)
        if item is None:
            return None
        item.result = result
        item.rendered = rendered
        item.status = "new"
        item.accepted_uid = None
        tile = self._tile(item_id)
        if tile is not None:
            tile.setIcon(self._icon(item))
            tile.setText(self._caption(item))
            tile.setToolTip(self._tooltip(item))
        if self._current == item_id:
            self._show(item)
        self._update_buttons()
        return item

    def clear(self) -> None:
        self.list.clear()
        self.items.clear()
        self._current = None
        for pane in (self.real_pane, self.generated_pane, self.labels_pane):
            pane.set_image(None)
        self._update_buttons()
        self.countChanged.emit(0)

    # -- actions --------------------------------------------------------------------------
    def selected_items(self) -> list[GalleryItem]:
        ids = [t.data(_ROLE_ID) for t in self.list.selectedItems()]
        out = [self.items[i] for i in ids if i in self.items]
        if not out and self._current in self.items:
            out = [self.items[self._current]]
        return out

    def accept(self, item: GalleryItem) -> Document | None:
        """Turn ``item`` into a document (once); emits ``accepted``. A label map that waits
        for its image (a kept variant) gets this image itself, so it becomes a pair that
        exports; otherwise the result becomes a new document beside its source."""
        if item.status == "accepted":
            return None
        doc = fill_waiting_source(item) or document_from_result(item)
        item.status, item.accepted_uid = "accepted", doc.uid
        tile = self._tile(item.id)
        if tile is not None:
            tile.setText(self._caption(item))
            tile.setIcon(self._icon(item))
        self.accepted.emit(doc)
        self._update_buttons()
        return doc

    def accept_selected(self) -> list[Document]:
        return [d for d in (self.accept(i) for i in self.selected_items()) if d is not None]

    def accept_all(self) -> list[Document]:
        return [d for d in (self.accept(i) for i in list(self.items.values())) if d is not None]

    def reject(self, item: GalleryItem) -> None:
        """Drop ``item`` from the gallery (an accepted document stays in the project)."""
        tile = self._tile(item.id)
        if tile is not None:
            row = self.list.row(tile)
            self.list.takeItem(row)
        self.items.pop(item.id, None)
        self._drop_empty_headers()
        if self._current == item.id:
            self._current = None
            self._on_current_changed(self.list.currentItem(), None)
        self._update_buttons()
        self.countChanged.emit(len(self.items))

    def reject_selected(self) -> None:
        for item in self.selected_items():
            self.reject(item)

    def regenerate_selected(self) -> None:
        for item in self.selected_items():
            self.regenerateRequested.emit(item)

    def set_outline(self, on: bool) -> None:
        self._outline = bool(on)
        for i in range(self.list.count()):
            tile = self.list.item(i)
            item = self.items.get(tile.data(_ROLE_ID))
            if item is not None:
                tile.setIcon(self._icon(item))
        if self._current in self.items:
            self._show(self.items[self._current])

    def current_item(self) -> GalleryItem | None:
        return self.items.get(self._current) if self._current is not None else None

    def select(self, item: GalleryItem) -> None:
        tile = self._tile(item.id)
        if tile is not None:
            self.list.clearSelection()
            self.list.setCurrentItem(tile)

    # -- internals ------------------------------------------------------------------------
    def _tile(self, item_id: int) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            t = self.list.item(i)
            if t.data(_ROLE_ID) == item_id:
                return t
        return None

    def _group_end(self, key: str) -> int | None:
        """Row just after the last tile of group ``key``; None when the group is new."""
        found = None
        for i in range(self.list.count()):
            t = self.list.item(i)
            if t.data(_ROLE_KEY) == key:
                found = i + 1
            elif found is not None:
                break
        return found

    def _drop_empty_headers(self) -> None:
        i = 0
        while i < self.list.count():
            t = self.list.item(i)
            if t.data(_ROLE_ID) is None:  # a header: keep it only if a result follows it
                nxt = self.list.item(i + 1)
                if nxt is None or nxt.data(_ROLE_ID) is None:
                    self.list.takeItem(i)
                    continue
            i += 1

    def _header_tile(self, item: GalleryItem) -> QListWidgetItem:
        pix = QPixmap.fromImage(rgb_to_qimage(item.pictures().labels_thumb))
        name = item.source.name if item.source is not None else "label map"
        tile = QListWidgetItem(_icon(_fit(pix)), f"▸ {name}")
        tile.setData(_ROLE_KEY, item.source_key())
        tile.setToolTip(f"The label map '{name}'; its generated images follow")
        tile.setFlags(Qt.ItemFlag.ItemIsEnabled)  # a header cannot be selected or accepted
        tile.setForeground(QColor(120, 170, 255))
        return tile

    def _icon(self, item: GalleryItem) -> QIcon:
        pics = item.pictures()
        q = rgb_to_qimage(pics.thumb_outlined) if self._outline else gray_to_qimage(pics.thumb)
        pix = _fit(QPixmap.fromImage(q))
        if item.status == "accepted":
            p = QPainter(pix)
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            p.setBrush(QColor(40, 170, 80))
            p.setPen(Qt.PenStyle.NoPen)
            p.drawEllipse(pix.width() - 22, 4, 18, 18)
            p.setPen(QColor(255, 255, 255))
            p.drawText(QRectF(pix.width() - 22, 4, 18, 18), Qt.AlignmentFlag.AlignCenter, "✓")
            p.end()
        return _icon(pix)

    def _caption(self, item: GalleryItem) -> str:
        # short enough for the tile: "seed 1713456789" with a mark did not fit and was cut
        mark = "✓ " if item.status == "accepted" else ""
        return f"{mark}#{item.seed}"

    def _tooltip(self, item: GalleryItem) -> str:
        prov = item.result.provenance
        src = item.source.name if item.source is not None else "?"
        return (f"{src}: {prov.get('backend')} seed {prov.get('seed')}, "
                f"{prov.get('steps')} steps, class {item.klass or '-'}, "
                f"{prov.get('seconds', 0):.2f} s on {prov.get('device')}")

    def _on_current_changed(self, cur: QListWidgetItem | None, _prev: Any) -> None:
        item_id = cur.data(_ROLE_ID) if cur is not None else None
        self._current = item_id if item_id in self.items else None
        if self._current is not None:
            self._show(self.items[self._current])
        self._update_buttons()

    def _show(self, item: GalleryItem) -> None:
        pics = item.pictures()
        src_img = item.source.image if item.source is not None else None
        if src_img is not None:
            self.real_pane.set_image(src_img.to_uint8())
        else:
            self.real_pane.set_image(None, "no real image\n(painted label map)")
        self.generated_pane.set_image(
            pics.outlined if self._outline else np.asarray(item.result.image, np.uint8))
        # the seed is the tile's caption and in the tooltip; "Generated · seed 1713…" was cut
        self.generated_pane.caption = "Generated"
        self.generated_pane.setToolTip(f"Generated with seed {item.seed}")
        self.generated_pane.update()
        self.labels_pane.set_image(pics.labels_rgb)

    def _update_buttons(self) -> None:
        has = bool(self.selected_items())
        for b in (self.accept_button, self.reject_button, self.regenerate_button):
            b.setEnabled(has)
        self.accept_all_button.setEnabled(
            any(i.status != "accepted" for i in self.items.values())
        )


def _icon(pix: QPixmap) -> QIcon:
    """An icon that looks the same selected: the default blue tint hides the image."""
    icon = QIcon(pix)
    icon.addPixmap(pix, QIcon.Mode.Selected)
    return icon


def _fit(pix: QPixmap) -> QPixmap:
    """The picture scaled into a THUMB square, centred on a transparent one: every tile is the
    same size, so a portrait BUSI image beside a landscape HC18 one is neither cropped nor
    pushes its caption out of the (uniform) grid cell."""
    scaled = pix.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation)
    square = QPixmap(THUMB, THUMB)
    square.fill(Qt.GlobalColor.transparent)
    p = QPainter(square)
    p.drawPixmap((THUMB - scaled.width()) // 2, (THUMB - scaled.height()) // 2, scaled)
    p.end()
    return square

