"""The main window: image list, canvas, label panel, tools, menus, status bar, autosave.

Public API that panels (gui/panels/*) rely on: ``project``, ``canvas``,
``current_document()``, ``add_documents(docs, select=True)``, ``open_document(uid)``,
``currentDocumentChanged(object)``, ``show_error(msg)``, ``register_tool(tool)``,
``refresh_document(doc)``, ``selected_documents()``, and the
menus ``file_menu``, ``edit_menu``, ``view_menu``, ``tools_menu``, ``help_menu``.
Project, import and export actions live in ``window_project.ProjectMixin``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import qtawesome as qta
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
)
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QMessageBox, QToolBar, QWidget

from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import LabelSchema
from usgen_desktop.gui import project_io
from usgen_desktop.gui.autosave import Autosaver
from usgen_desktop.gui.canvas import Canvas
from usgen_desktop.gui.image_list import ImageList
from usgen_desktop.gui.label_panel import LabelPanel
from usgen_desktop.gui.panels import PANELS
from usgen_desktop.gui.tools import CanvasTool, default_tools
from usgen_desktop.gui.window_project import ProjectMixin
from usgen_desktop.io.project import Project

log = logging.getLogger(__name__)
APP_TITLE = "USGen Desktop"


def _icon(name: str):  # noqa: ANN202
    from PySide6.QtWidgets import QApplication

    # Light icons on a dark theme, dark ones on a light theme.
    dark = QApplication.palette().window().color().lightness() < 128
    color, disabled = ("#d0d4da", "#6a6e75") if dark else ("#30343a", "#a8acb2")
    try:
        return qta.icon(name, color=color, color_disabled=disabled)
    except Exception:  # an unknown icon name must never stop the window from opening
        return qta.icon("fa5s.question")


class MainWindow(ProjectMixin, QMainWindow):
    """The editor window over one project."""

    currentDocumentChanged = Signal(object)  # Document | None
    # A different project is shown: panels drop what belonged to the old one (the gallery's
    # results, the preview, a finished progress bar), so nothing of it can enter the new one.
    projectChanged = Signal(object)  # Project

    def __init__(self, project: Project | None = None, settings: QSettings | None = None,
                 load_panels: bool = True) -> None:
        super().__init__()
        self.settings = settings
        self.project: Project | None = None
        self._document: Document | None = None
        self.tools: dict[str, CanvasTool] = {}
        self.tool_actions: dict[str, QAction] = {}
        self.setWindowTitle(APP_TITLE)
        self.resize(1280, 820)

        self.canvas = Canvas()
        self.setCentralWidget(self.canvas)
        self.setAcceptDrops(True)  # drop image files or dataset folders to import them
        self.image_list = ImageList()
        self.label_panel = LabelPanel()
        self._dock("Images", self.image_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Labels", self.label_panel, Qt.DockWidgetArea.RightDockWidgetArea)

        self._make_status_bar()
        self._make_actions()
        self._make_menus()
        self.toolbar = self._make_toolbar()
        for tool in default_tools():
            self.register_tool(tool)
        self.select_tool("brush")

        self.image_list.documentActivated.connect(self.open_document)
        self.label_panel.activeLabelChanged.connect(self._on_active_label)
        self.label_panel.schemaEdited.connect(self.apply_schema)
        self.label_panel.opacityChanged.connect(self.canvas.set_opacity)
        self.canvas.cursorMoved.connect(self._on_cursor)
        self.canvas.zoomChanged.connect(self._on_zoom)
        self.canvas.strokeFinished.connect(self._after_edit)

        self.autosaver = Autosaver(lambda: self.project, parent=self)
        self.autosaver.saved.connect(self._on_autosaved)
        self.autosaver.failed.connect(self.show_error)
        self.panel_errors: list[str] = []
        if load_panels:
            # Before the project: panels then see the first currentDocumentChanged, and the
            # saved dock layout below can place their docks too.
            self.load_panels()
        self._restore_settings()
        if project is not None:
            self.set_project(project)
        self.autosaver.start()

    # -- building ------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, text: str, slot, shortcut=None, icon: str | None = None,  # noqa: ANN001
                tip: str | None = None, checkable: bool = False) -> QAction:
        act = QAction(text, self)
        if icon:
            act.setIcon(_icon(icon))
        if shortcut is not None:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(k) for k in keys])
        label = text.replace("&", "").rstrip("…")
        keys_text = act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        act.setToolTip(f"{tip or label}" + (f" ({keys_text})" if keys_text else ""))
        act.setCheckable(checkable)
        act.triggered.connect(slot)
        self.addAction(act)  # shortcuts work even when the menu bar is hidden
        return act

    def _make_actions(self) -> None:
        S = QKeySequence.StandardKey
        a = self._action
        self.act_new = a("&New project…", self.new_project, S.New, "fa5s.folder-plus")
        self.act_open_project = a("&Open project…", self.open_project_dialog, "Ctrl+Shift+P",
                                  "fa5s.folder-open")
        self.act_import = a("&Import images…", self.import_files_dialog, "Ctrl+O",
                            "fa5s.file-import", "Import image files")
        self.act_import_folder = a("Import &folder or dataset…", self.import_folder_dialog,
                                   "Ctrl+Shift+O", "fa5s.folder",
                                   "Import a folder: BUSI download, images/ + masks/, nnU-Net")
        self.act_save = a("&Save", self.save, "Ctrl+S", "fa5s.save", "Save the project")
        self.act_export = a("&Export…", self.export_dialog, "Ctrl+E", "fa5s.file-export",
                            "Export image/mask pairs for nnU-Net or MONAI")
        self.act_quit = a("&Quit", self.close, "Ctrl+Q")
        self.act_undo = a("&Undo", self.undo, "Ctrl+Z", "fa5s.undo")
        self.act_redo = a("&Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"], "fa5s.redo")
        self.act_remove = a("Remove image from project…", self.remove_current, "Del",
                            "fa5s.trash-alt")
        self.act_fit = a("&Fit to window", self.canvas.fit, "F", "fa5s.expand")
        self.act_zoom_in = a("Zoom &in", lambda: self.canvas.zoom_by(1.25),
                             ["Ctrl++", "+", "="], "fa5s.search-plus")
        self.act_zoom_out = a("Zoom &out", lambda: self.canvas.zoom_by(0.8), ["Ctrl+-", "-"],
                              "fa5s.search-minus")
        self.act_actual = a("&Actual size (100 %)", lambda: self.canvas.set_zoom(1.0),
                            "Ctrl+1")
        self.act_show_labels = a("Show &labels", self.canvas.set_show_labels, "O",
                                 checkable=True)
        self.act_show_labels.setChecked(True)
        self.act_next = a("&Next image", lambda: self.step_document(1), "PgDown",
                          "fa5s.arrow-down")
        self.act_prev = a("&Previous image", lambda: self.step_document(-1), "PgUp",
                          "fa5s.arrow-up")
        self.act_smaller = a("Smaller brush", lambda: self.change_brush(1 / 1.25), "[")
        self.act_larger = a("Larger brush", lambda: self.change_brush(1.25), "]")
        self.act_lock = a("Edit only this &label", self.set_lock, "L", "fa5s.lock",
                          "Edit only this label: other labels stay untouched", checkable=True)
        self.act_about = a("&About USGen Desktop", self.about, None, "fa5s.info-circle")
        self.act_keys = a("&Keyboard shortcuts", self.show_shortcuts, "F1", "fa5s.keyboard")
        for n in range(1, 10):
            self._action(f"Label {n}", lambda _c=False, n=n: self.label_panel.select_by_key(n),
                         str(n))

    def _make_menus(self) -> None:
        mb = self.menuBar()
        self.file_menu = mb.addMenu("&File")
        self.file_menu.addAction(self.act_new)
        self.file_menu.addAction(self.act_open_project)
        self.recent_menu = self.file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        for act in (None, self.act_import, self.act_import_folder, None, self.act_save,
                    self.act_export, None, self.act_quit):
            self.file_menu.addSeparator() if act is None else self.file_menu.addAction(act)
        self.edit_menu = mb.addMenu("&Edit")
        for act in (self.act_undo, self.act_redo, None, self.act_remove):
            self.edit_menu.addSeparator() if act is None else self.edit_menu.addAction(act)
        self.view_menu = mb.addMenu("&View")
        for act in (self.act_fit, self.act_zoom_in, self.act_zoom_out, self.act_actual, None,
                    self.act_show_labels):
            self.view_menu.addSeparator() if act is None else self.view_menu.addAction(act)
        opacity = self.view_menu.addMenu("Overlay &opacity")
        for pct in (0, 25, 50, 75, 100):
            act = opacity.addAction(f"{pct} %")
            act.triggered.connect(lambda _c=False, v=pct: self.label_panel.set_opacity(v / 100))
        self.view_menu.addSeparator()
        self.view_menu.addAction(self.act_prev)
        self.view_menu.addAction(self.act_next)
        self.tools_menu = mb.addMenu("&Tools")
        self._tools_sep = self.tools_menu.addSeparator()
        for act in (self.act_smaller, self.act_larger, self.act_lock):
            self.tools_menu.addAction(act)
        self.help_menu = mb.addMenu("&Help")
        self.help_menu.addAction(self.act_keys)
        self.help_menu.addAction(self.act_about)

    def _make_toolbar(self) -> QToolBar:
        tb = QToolBar("Tools", self)
        tb.setObjectName("toolbar_tools")
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        for act in (self.act_import, self.act_save, self.act_export, None, self.act_undo,
                    self.act_redo, None):
            tb.addSeparator() if act is None else tb.addAction(act)
        self._tool_group = QActionGroup(self)
        self._tool_group.setExclusive(True)
        self._toolbar_sep = tb.addSeparator()
        tb.addAction(self.act_lock)
        tb.addSeparator()
        tb.addAction(self.act_fit)
        tb.addSeparator()
        # What the next stroke will do: label colour and name, brush size, lock.
        self.tool_info = QLabel("")
        self.tool_info.setAccessibleName("Active label and brush size")
        self.tool_info.setContentsMargins(6, 0, 6, 0)
        tb.addWidget(self.tool_info)
        return tb

    def _make_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_pos = QLabel("")
        self.status_value = QLabel("")
        self.status_label = QLabel("")
        self.status_zoom = QLabel("")
        for w, width in ((self.status_pos, 110), (self.status_value, 90),
                         (self.status_label, 170), (self.status_zoom, 80)):
            w.setMinimumWidth(width)
            sb.addPermanentWidget(w)

    def register_tool(self, tool: CanvasTool) -> QAction:
        """Offer a canvas tool in the toolbar and Tools menu (panels call this too)."""
        if tool.name in self.tools:
            return self.tool_actions[tool.name]
        act = QAction(_icon(tool.icon), tool.title, self)
        act.setCheckable(True)
        if tool.shortcut:
            act.setShortcut(QKeySequence(tool.shortcut))
        act.setToolTip(tool.full_tooltip())
        act.setStatusTip(tool.full_tooltip())
        act.triggered.connect(lambda _c=False, name=tool.name: self.select_tool(name))
        self._tool_group.addAction(act)
        self.toolbar.insertAction(self._toolbar_sep, act)
        self.tools_menu.insertAction(self._tools_sep, act)
        self.addAction(act)
        self.tools[tool.name] = tool
        self.tool_actions[tool.name] = act
        return act

    def select_tool(self, name: str) -> None:
        tool = self.tools[name]
        self.tool_actions[name].setChecked(True)
        self.canvas.set_tool(tool)

    def load_panels(self) -> None:
        """Install the optional panels that exist (generate, train, variants, sector)."""
        for name in PANELS:
            modname = f"usgen_desktop.gui.panels.{name}"
            try:
                module = importlib.import_module(modname)
            except ModuleNotFoundError as exc:
                if exc.name == modname:
                    continue  # not built (yet): the editor works without it
                self._panel_failed(name, exc)
                continue
            except Exception as exc:  # a broken panel must not keep the editor from starting
                self._panel_failed(name, exc)
                continue
            try:
                module.install(self)
            except Exception as exc:
                self._panel_failed(name, exc)

    def _panel_failed(self, name: str, exc: BaseException) -> None:
        log.exception("panel %s failed to load", name, exc_info=exc)
        self.panel_errors.append(f"The {name} panel could not be loaded ({exc}).")
        self.statusBar().showMessage(self.panel_errors[-1], 10000)

    # -- documents -----------------------------------------------------------------------
    def current_document(self) -> Document | None:
        return self._document

    def selected_documents(self) -> list[Document]:
        """The documents selected in the image list, in project order."""
        if self.project is None:
            return []
        wanted = set(self.image_list.selected_uids())
        return [d for d in self.project.documents if d.uid in wanted]

    def add_documents(self, docs: Iterable[Document], select: bool = True) -> None:
        """Add documents to the project (they take the project's schema) and list them.

        A document already in the project (a label map that just got its generated image)
        is redrawn, not added twice."""
        docs = list(docs)
        if self.project is None or not docs:
            return
        present = {d.uid for d in self.project.documents}
        for doc in [d for d in docs if d.uid in present]:
            self.refresh_document(doc)
        docs = [d for d in docs if d.uid not in present]
        if not docs:
            self._update_title()
            return
        schema = self.project.schema
        for doc in docs:
            if doc.schema != schema:
                schema = project_io.merge_schema(schema, doc.schema)
        if schema != self.project.schema:
            self.apply_schema(schema)
        for doc in docs:
            doc.schema = self.project.schema  # direct: not an edit, nothing to repaint yet
        self.project.add(docs)
        self.image_list.set_documents(self.project.documents)
        if select:
            self.open_document(docs[0].uid)
        elif self._document is not None:
            self.image_list.select(self._document.uid)
        self._update_title()

    def open_document(self, uid: str) -> None:
        if self.project is None:
            return
        try:
            doc = self.project.get(uid)
        except KeyError:
            return
        if doc is self._document:
            return
        if self._document is not None:
            self._document.edit_lock = None
            if self._document.in_stroke:
                self._document.end_stroke()
        self._document = doc
        self.canvas.set_document(doc)
        self.image_list.select(uid)
        if doc.schema is not self.label_panel.schema:
            self.label_panel.set_schema(doc.schema)
        self.set_lock(self.act_lock.isChecked())
        self._update_actions()
        self._update_title()
        self.currentDocumentChanged.emit(doc)

    def refresh_document(self, doc: Document) -> None:
        """Redraw ``doc`` after a change made behind the window's back (a new image, a label
        map edited without the document's notifications)."""
        if doc is self._document:
            self.canvas.reload()
        self.image_list.refresh(doc.uid)
        self._update_title()

    def step_document(self, step: int) -> None:
        if self.project is None or not self.project.documents:
            return
        docs = self.project.documents
        uids = [d.uid for d in docs]
        i = uids.index(self._document.uid) if self._document in docs else -1
        self.open_document(uids[max(0, min(len(uids) - 1, i + step))])

    def ask_remove(self, doc: Document) -> bool:
        """Confirm removing a document (a method so tests answer without a dialog)."""
        return project_io.ask_yes_no(
            self, "Remove image",
            f"Remove '{doc.name}' and its label map from the project? (Save makes it final.)")

    def remove_current(self) -> None:
        doc, project = self._document, self.project
        if doc is None or project is None:
            return
        if not self.ask_remove(doc):
            return
        i = project.documents.index(doc)
        project.remove(doc.uid)
        self._document = None
        self.canvas.set_document(None)
        self.image_list.set_documents(project.documents)
        if project.documents:
            self.open_document(project.documents[min(i, len(project.documents) - 1)].uid)
        else:
            self.currentDocumentChanged.emit(None)
        self._update_title()

    def apply_schema(self, schema: LabelSchema) -> None:
        """Make ``schema`` the project's and every document's (rename, recolour, hide)."""
        if self.project is not None:
            self.project.schema = schema
            for doc in self.project.documents:
                if doc is not self._document:
                    doc.schema = schema  # repainted when opened
        if self._document is not None:
            self._document.set_schema(schema)  # the canvas re-colours from the new LUT
        if self.label_panel.schema is not schema:
            self.label_panel.set_schema(schema)
        self._update_tool_info()
        self.image_list.refresh()
        self._update_title()

    # -- editing -------------------------------------------------------------------------
    def undo(self) -> None:
        if self._document is not None and self._document.undo() is not None:
            self._after_edit()

    def redo(self) -> None:
        if self._document is not None and self._document.redo() is not None:
            self._after_edit()

    def _after_edit(self) -> None:
        if self._document is not None:
            self.image_list.refresh(self._document.uid)
        self._update_actions()
        self._update_title()

    def change_brush(self, factor: float) -> None:
        size = self.canvas.brush_size * factor
        size = round(size) if factor > 1 else int(size)  # always moves by at least 1 px
        if size == round(self.canvas.brush_size):
            size += 1 if factor > 1 else -1
        self.canvas.set_brush_size(size)
        self._update_tool_info()

    def set_lock(self, on: bool) -> None:
        """"Edit only this label": the document's edit lock follows the active label."""
        if self.act_lock.isChecked() != bool(on):
            self.act_lock.setChecked(bool(on))
        if self._document is not None:
            self._document.edit_lock = self.canvas.active_label if on else None
        self._update_tool_info()

    def _on_active_label(self, label_id: int) -> None:
        self.canvas.active_label = label_id
        if self.act_lock.isChecked():
            self.set_lock(True)
        self._update_tool_info()

    def _update_tool_info(self) -> None:
        schema = self.label_panel.schema
        lab = schema.get(self.canvas.active_label) if schema is not None else None
        if lab is None:
            self.tool_info.setText(f"brush {int(self.canvas.brush_size)} px")
            return
        r, g, b = lab.color
        lock = " · <b>only this label</b>" if self.act_lock.isChecked() else ""
        self.tool_info.setText(
            f'<span style="color: rgb({r},{g},{b}); font-size: 14pt">■</span> '
            f"{lab.name} · brush {int(self.canvas.brush_size)} px{lock}")

    # -- status --------------------------------------------------------------------------
    def _on_cursor(self, pos: tuple[int, int] | None) -> None:
        doc = self._document
        if pos is None or doc is None:
            self.status_pos.setText("")
            self.status_value.setText("")
            self.status_label.setText("")
            return
        col, row = pos
        self.status_pos.setText(f"x {col}, y {row}")
        if doc.image is not None:
            self.status_value.setText(f"value {int(doc.image.pixels[row, col])}")
        else:
            self.status_value.setText("no image")
        lid = int(doc.labels.data[row, col])
        lab = doc.schema.get(lid)
        self.status_label.setText(f"{lab.name if lab else 'unknown label'} (id {lid})")

    def _on_zoom(self, scale: float) -> None:
        self.status_zoom.setText(f"zoom {scale * 100:.0f} %")

    def _on_autosaved(self, n: int) -> None:
        self.statusBar().showMessage(f"Autosaved at {time.strftime('%H:%M:%S')}", 2000)

    def _update_actions(self) -> None:
        doc = self._document
        self.act_undo.setEnabled(doc is not None and doc.history.can_undo())
        self.act_redo.setEnabled(doc is not None and doc.history.can_redo())
        self.act_remove.setEnabled(doc is not None)
        has_project = self.project is not None
        for act in (self.act_save, self.act_export, self.act_import, self.act_import_folder):
            act.setEnabled(has_project)

    def _update_title(self) -> None:
        name = self.project.name if self.project is not None else ""
        if name and self.is_demo_project():
            name = f"{name} project (synthetic examples)"
        doc = f" — {self._document.name}" if self._document is not None else ""
        self.setWindowTitle(f"{name}[*]{doc} — {APP_TITLE}" if name else APP_TITLE)
        self.setWindowModified(bool(self.project is not None and self.project.is_dirty()))

    def show_error(self, msg: str) -> None:
        """One clear sentence in a dialog (never a traceback)."""
        QMessageBox.warning(self, APP_TITLE, msg)

    def shortcut_table(self) -> list[tuple[str, str]]:
        """(what, keys) for every action that has a shortcut, panels' included."""
        rows = []
        seen = set()
        for act in self.actions():
            keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText)
                             for k in act.shortcuts())
            text = act.text().replace("&", "").rstrip("…")
            if keys and (text, keys) not in seen:
                seen.add((text, keys))
                rows.append((text, keys))
        rows.append(("Pan while any tool is active", "Space + drag, middle drag"))
        rows.append(("Zoom about the cursor", "mouse wheel"))
        return rows

    def show_shortcuts(self) -> None:
        from PySide6.QtWidgets import QDialog, QTableWidget, QTableWidgetItem, QVBoxLayout

        rows = self.shortcut_table()
        dlg = QDialog(self)
        dlg.setWindowTitle("Keyboard shortcuts")
        table = QTableWidget(len(rows), 2, dlg)
        table.setHorizontalHeaderLabels(["Action", "Keys"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, (text, keys) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(text))
            table.setItem(r, 1, QTableWidgetItem(keys))
        table.resizeColumnsToContents()
        table.horizontalHeader().setStretchLastSection(True)
        lay = QVBoxLayout(dlg)
        lay.addWidget(table)
        dlg.resize(460, 560)
        dlg.exec()

    def about(self) -> None:
        try:
            about = importlib.import_module("usgen_desktop.gui.about")
        except ModuleNotFoundError as exc:
            if exc.name != "usgen_desktop.gui.about":
                raise
            from usgen_desktop import __version__

            QMessageBox.about(self, f"About {APP_TITLE}",
                              f"{APP_TITLE} {__version__}\n\nPaint ultrasound label maps, "
                              "generate matching images, export paired datasets.")
            return
        about.show_about(self)

    # -- settings and closing ------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = self.settings
        if s is None:
            return
        geom = s.value("window/geometry")
        if geom is not None:
            self.restoreGeometry(geom)
        state = s.value("window/state")
        if state is not None:
            self.restoreState(state)
        self.label_panel.set_opacity(float(s.value("view/opacity", 0.5)))
        self.canvas.set_brush_size(float(s.value("tools/brush_size", 12)))
        self._update_tool_info()

    def _save_settings(self) -> None:
        s = self.settings
        if s is None:
            return
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("view/opacity", self.canvas.opacity)
        s.setValue("tools/brush_size", self.canvas.brush_size)
        s.sync()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.project is not None and event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.import_paths(paths)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._may_leave_project():
            event.ignore()
            return
        self.autosaver.stop()
        try:
            from usgen_desktop.gui import worker

            worker.shutdown_all()
        except ImportError:
            pass
        self._save_settings()
        event.accept()
