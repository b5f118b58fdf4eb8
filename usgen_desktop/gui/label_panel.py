"""The label panel: the schema's labels with colour, name and visibility; the overlay opacity.

Selecting a row picks the active label. Double-click renames, "Colour..." recolours, the
check box hides or shows. LabelSchema is frozen, so every edit builds a new schema and hands
it to ``schemaEdited``; the main window applies it to the project and its documents.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QColorDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.labels import LabelSchema

ID_ROLE = Qt.ItemDataRole.UserRole


def swatch(color: tuple[int, int, int], size: int = 16) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(*color))
    return QIcon(pm)


class LabelPanel(QWidget):
    """Lists the labels of a schema; emits the user's choices, never edits documents itself."""

    activeLabelChanged = Signal(int)
    schemaEdited = Signal(object)  # the new LabelSchema
    opacityChanged = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.schema: LabelSchema | None = None
        self._filling = False
        self.list = QListWidget()
        self.list.setAccessibleName("Labels")
        self.list.setToolTip(
            "Click to paint with a label (keys 1-9); double-click to rename; "
            "the check box shows or hides it"
        )
        self.list.setEditTriggers(
            QListWidget.EditTrigger.DoubleClicked | QListWidget.EditTrigger.EditKeyPressed
        )
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemChanged.connect(self._on_item_changed)

        self.colour_button = QPushButton("Colour…")
        self.colour_button.setToolTip("Change the colour of the selected label")
        self.colour_button.clicked.connect(self.recolour_current)

        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setAccessibleName("Overlay opacity")
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(lambda v: self.opacityChanged.emit(v / 100.0))
        self.opacity_label = QLabel("Opacity")
        self.opacity_label.setBuddy(self.opacity)

        row = QHBoxLayout()
        row.addWidget(self.opacity_label)
        row.addWidget(self.opacity, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.colour_button)
        lay.addLayout(row)

    # -- showing -------------------------------------------------------------------------
    def set_schema(self, schema: LabelSchema | None, active: int | None = None) -> None:
        """Show ``schema``'s labels; keep the active label when it still exists."""
        current = self.active_label() if active is None else active
        self.schema = schema
        self._filling = True
        try:
            self.list.clear()
            if schema is None:
                return
            for lab in schema.labels:
                item = QListWidgetItem(swatch(lab.color), lab.name)
                item.setData(ID_ROLE, lab.id)
                item.setFlags(
                    Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled
                    | Qt.ItemFlag.ItemIsEditable | Qt.ItemFlag.ItemIsUserCheckable
                )
                item.setCheckState(
                    Qt.CheckState.Checked if lab.visible else Qt.CheckState.Unchecked
                )
                key = f"key {lab.id}" if 1 <= lab.id <= 9 else ""
                item.setToolTip(f"id {lab.id}" + (f" · {key}" if key else ""))
                self.list.addItem(item)
        finally:
            self._filling = False
        self._fit_list_height()
        ids = schema.ids
        if current not in ids:
            fg = [i for i in ids if i != 0]
            current = fg[0] if fg else 0
        self.select_label(current)

    def _fit_list_height(self) -> None:
        # As tall as its rows (up to 10), so the docks below it get the room.
        rows = min(max(self.list.count(), 2), 10)
        row_h = self.list.sizeHintForRow(0) if self.list.count() else 20
        self.list.setFixedHeight(rows * max(row_h, 18) + 2 * self.list.frameWidth() + 4)

    def active_label(self) -> int:
        item = self.list.currentItem()
        return int(item.data(ID_ROLE)) if item is not None else 1

    def select_label(self, label_id: int) -> bool:
        """Make ``label_id`` the active label; False when the schema has no such id."""
        for i in range(self.list.count()):
            if int(self.list.item(i).data(ID_ROLE)) == label_id:
                self.list.setCurrentRow(i)
                return True
        return False

    def select_by_key(self, n: int) -> bool:
        """Keys 1-9: the label with id n, else the n-th label after background."""
        if self.select_label(n):
            return True
        fg = [lab.id for lab in self.schema.labels if lab.id != 0] if self.schema else []
        return 0 < n <= len(fg) and self.select_label(fg[n - 1])

    def set_opacity(self, value: float) -> None:
        self.opacity.setValue(int(round(value * 100)))

    # -- edits ---------------------------------------------------------------------------
    def _on_current(self, item: QListWidgetItem | None, _prev: QListWidgetItem | None) -> None:
        if item is not None and not self._filling:
            self.activeLabelChanged.emit(int(item.data(ID_ROLE)))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._filling or self.schema is None:
            return
        label_id = int(item.data(ID_ROLE))
        lab = self.schema.by_id(label_id)
        name = item.text().strip()
        visible = item.checkState() == Qt.CheckState.Checked
        schema = self.schema
        if name and name != lab.name:
            schema = schema.renamed(label_id, name)
        elif not name:
            self._filling = True
            item.setText(lab.name)  # an empty name is not a name: put the old one back
            self._filling = False
        if visible != lab.visible:
            schema = schema.with_visibility(label_id, visible)
        if schema is not self.schema:
            self.schema = schema
            self.schemaEdited.emit(schema)

    def rename(self, label_id: int, name: str) -> None:
        """Rename a label as if the user edited its row."""
        if self.schema is None or not name.strip():
            return
        self._emit(self.schema.renamed(label_id, name.strip()))

    def set_visible(self, label_id: int, visible: bool) -> None:
        if self.schema is None:
            return
        self._emit(self.schema.with_visibility(label_id, visible))

    def recolour(self, label_id: int, color: tuple[int, int, int]) -> None:
        if self.schema is None:
            return
        self._emit(self.schema.recoloured(label_id, color))

    def recolour_current(self) -> None:
        """Ask for a new colour of the selected label."""
        if self.schema is None or self.list.currentItem() is None:
            return
        label_id = self.active_label()
        lab = self.schema.by_id(label_id)
        chosen = self.ask_colour(QColor(*lab.color), lab.name)
        if chosen is not None and chosen.isValid():
            self.recolour(label_id, (chosen.red(), chosen.green(), chosen.blue()))

    def ask_colour(self, initial: QColor, name: str) -> QColor | None:
        """The colour dialog (a method so tests replace it)."""
        return QColorDialog.getColor(initial, self, f"Colour of '{name}'")

    def _emit(self, schema: LabelSchema) -> None:
        active = self.active_label()
        self.set_schema(schema, active)
        self.schemaEdited.emit(schema)
