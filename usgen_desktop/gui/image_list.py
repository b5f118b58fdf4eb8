"""The list of the project's documents: thumbnail, name, class tag and what each one holds.

Each row says whether the document has a mask yet and whether it has an image at all (a
label map waiting for generation has none). Thumbnails are made lazily, only for rows the
view shows, and cached per document revision, so a project of thousands stays quick.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import cv2
import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QLineEdit, QListView, QVBoxLayout, QWidget

from usgen_desktop.core.document import Document

THUMB = 56
UID_ROLE = Qt.ItemDataRole.UserRole
FILTER_ROLE = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex


def status_text(doc: Document) -> str:
    """The second line of a row: class, and whether there is a mask / an image."""
    parts = []
    if doc.klass:
        parts.append(str(doc.klass))
    if doc.image is None:
        parts.append("label map only")
    else:
        # the export's rule: an empty mask that came with the image is a "normal" label
        parts.append("mask" if doc.has_mask else "empty mask" if doc.is_labelled
                     else "no mask")
    return " · ".join(parts)


def _thumb_size(doc: Document, size: int) -> tuple[int, int]:
    h, w = doc.shape
    f = size / max(h, w)
    return max(1, round(w * f)), max(1, round(h * f))


def thumbnail_gray(doc: Document, size: int = THUMB) -> np.ndarray | None:
    """The image shrunk to the thumbnail's size (None without an image)."""
    if doc.image is None:
        return None
    return cv2.resize(doc.image.to_uint8(), _thumb_size(doc, size), interpolation=cv2.INTER_AREA)


def thumbnail(doc: Document, size: int = THUMB, gray: np.ndarray | None = None) -> QPixmap:
    """A small picture of the image with its labels blended in; ``gray`` is the image
    already shrunk by :func:`thumbnail_gray` (a stroke changes the labels, not the image)."""
    tw, th = _thumb_size(doc, size)
    if gray is None or gray.shape != (th, tw):
        gray = thumbnail_gray(doc, size)
    if gray is None:
        gray = np.zeros((th, tw), np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    labels = cv2.resize(doc.labels.data, (tw, th), interpolation=cv2.INTER_NEAREST)
    lut = doc.schema.lut()
    colour = lut[labels]
    a = colour[..., 3:4].astype(np.float32) / 255.0 * 0.55
    rgb = rgb * (1 - a) + colour[..., :3].astype(np.float32) * a
    rgb = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
    img = QImage(rgb.data, tw, th, 3 * tw, QImage.Format.Format_RGB888).copy()
    # Centred on a square so every row's text starts at the same place.
    square = QPixmap(size, size)
    square.fill(Qt.GlobalColor.transparent)
    painter = QPainter(square)
    painter.drawImage((size - tw) // 2, (size - th) // 2, img)
    painter.end()
    return square


class DocumentListModel(QAbstractListModel):
    """Rows over a list of documents (the project's own list, not a copy)."""

    def __init__(self, parent=None) -> None:  # noqa: ANN001
        super().__init__(parent)
        self.documents: Sequence[Document] = []
        self._thumbs: dict[str, tuple[int, int, QIcon]] = {}
        # the shrunk image per document: an edit redraws the thumbnail's labels only, without
        # converting and shrinking the whole image again on the GUI thread
        self._grays: dict[str, tuple[weakref.ref, np.ndarray]] = {}
        # "mask"/"no mask" scans the label map: remember it per revision, so filtering
        # thousands of rows on every keystroke does not scan them all again.
        self._status: dict[str, tuple[int, int, str]] = {}

    def set_documents(self, docs: Sequence[Document]) -> None:
        self.beginResetModel()
        self.documents = docs
        live = {d.uid for d in docs}
        self._thumbs = {k: v for k, v in self._thumbs.items() if k in live}
        self._grays = {k: v for k, v in self._grays.items() if k in live}
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.documents)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: ANN201
        if not index.isValid() or index.row() >= len(self.documents):
            return None
        doc = self.documents[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{doc.name}\n{self._status_of(doc)}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self._thumb(doc)
        if role == Qt.ItemDataRole.ToolTipRole:
            h, w = doc.shape
            src = doc.image.source if doc.image is not None and doc.image.source else None
            colour = " (converted from colour)" if doc.image is not None and doc.image.was_color \
                else ""
            lines = [doc.name, f"{w}×{h} px{colour}", self._status_of(doc)]
            if src:
                lines.append(str(src))
            return "\n".join(lines)
        if role == UID_ROLE:
            return doc.uid
        if role == FILTER_ROLE:
            return f"{doc.name} {doc.klass or ''} {self._status_of(doc)}"
        return None

    def _status_of(self, doc: Document) -> str:
        key = (doc.revision, id(doc.image))
        hit = self._status.get(doc.uid)
        if hit is not None and hit[:2] == key:
            return hit[2]
        text = status_text(doc)
        self._status[doc.uid] = (key[0], key[1], text)
        return text

    def _thumb(self, doc: Document) -> QIcon:
        # Keyed by revision and schema id: a stroke or a recolour makes it stale.
        key = (doc.revision, id(doc.schema))
        hit = self._thumbs.get(doc.uid)
        if hit is not None and hit[:2] == key:
            return hit[2]
        icon = QIcon(thumbnail(doc, gray=self._gray(doc)))
        self._thumbs[doc.uid] = (key[0], key[1], icon)
        return icon

    def _gray(self, doc: Document) -> np.ndarray | None:
        img = doc.image
        if img is None:
            return None
        hit = self._grays.get(doc.uid)
        if hit is not None and hit[0]() is img:
            return hit[1]
        gray = thumbnail_gray(doc)
        if gray is not None:
            self._grays[doc.uid] = (weakref.ref(img), gray)
        return gray

    def row_of(self, uid: str) -> int:
        for i, d in enumerate(self.documents):
            if d.uid == uid:
                return i
        return -1

    def refresh(self, uid: str | None = None) -> None:
        """Redraw one row (or all) after its document changed."""
        if not self.documents:
            return
        if uid is None:
            self.dataChanged.emit(self.index(0), self.index(len(self.documents) - 1))
            return
        row = self.row_of(uid)
        if row >= 0:
            self.dataChanged.emit(self.index(row), self.index(row))


class ImageList(QWidget):
    """A filter box over a list view of the documents; the current row is the open document."""

    documentActivated = Signal(str)  # uid

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = DocumentListModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterRole(FILTER_ROLE)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by name or class…")
        self.filter.setClearButtonEnabled(True)
        self.filter.setAccessibleName("Filter images")
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QListView()
        self.view.setModel(self.proxy)
        self.view.setAccessibleName("Images")
        self.view.setIconSize(QSize(THUMB, THUMB))
        self.view.setUniformItemSizes(True)  # lets the view skip measuring every row
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setSpacing(1)
        # a long name keeps its start and its end (a generated image's seed) in a narrow dock;
        # the tooltip has it whole
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.selectionModel().currentChanged.connect(self._on_current)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.filter)
        lay.addWidget(self.view, 1)

    def set_documents(self, docs: Sequence[Document]) -> None:
        self.model.set_documents(docs)

    def refresh(self, uid: str | None = None) -> None:
        self.model.refresh(uid)

    def _on_current(self, current: QModelIndex, _prev: QModelIndex) -> None:
        if current.isValid():
            self.documentActivated.emit(str(current.data(UID_ROLE)))

    def select(self, uid: str) -> None:
        """Make ``uid`` the current row (without emitting when it already is)."""
        row = self.model.row_of(uid)
        if row < 0:
            return
        index = self.proxy.mapFromSource(self.model.index(row))
        if not index.isValid():  # hidden by the filter: clear it so the open doc shows
            self.filter.clear()
            index = self.proxy.mapFromSource(self.model.index(row))
        if self.view.currentIndex() != index:
            self.view.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect
            )
        self.view.scrollTo(index)

    def selected_uids(self) -> list[str]:
        """The uids of the selected rows, in list order."""
        rows = sorted(
            self.proxy.mapToSource(i).row() for i in self.view.selectionModel().selectedIndexes()
        )
        return [self.model.documents[r].uid for r in rows]
