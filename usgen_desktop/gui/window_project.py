"""The main window's project side: open, create, save, restore an autosave, import, export.

A mixin of MainWindow (kept apart so each file stays readable). The prompts are methods
(``ask_restore``, ``ask_save_changes``) so tests answer them without a modal dialog.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog, QMessageBox

from usgen_desktop.core.document import Document
from usgen_desktop.errors import Cancelled, UsgenError
from usgen_desktop.gui import project_io
from usgen_desktop.io.project import Project, default_projects_dir

if TYPE_CHECKING:
    from usgen_desktop.gui.main_window import MainWindow  # noqa: F401


RECENT_MAX = 8
DEMO_NAME = "Demo"  # the folder the demo project lives in (gui/app.py makes it)


def is_demo_folder(folder: Path) -> bool:
    """Whether ``folder`` is the demo project's (synthetic example pairs, not the user's)."""
    try:
        return Path(folder).resolve() == (default_projects_dir() / DEMO_NAME).resolve()
    except OSError:
        return False


def new_project_folder(base: Path, name: str) -> Path:
    """A folder for a new project named after ``name`` that holds nothing yet."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "project"
    folder, k = base / safe, 2
    while folder.exists() and any(folder.iterdir()):
        folder, k = base / f"{safe}_{k}", k + 1
    return folder


class ProjectMixin:
    """Project, import and export actions of :class:`MainWindow`."""

    # -- project -------------------------------------------------------------------------
    def set_project(self, project: Project, offer_restore: bool = True) -> None:
        """Show ``project``; offer to restore an autosave newer than its last save."""
        self.project = project
        if offer_restore and project.has_autosave():
            if self.ask_restore(self._autosave_time(project)):
                project.restore_autosave()
            else:
                project.discard_autosave()
        self.autosaver.reset()
        self._document = None
        self.canvas.set_document(None)
        # before the first document opens: panels clear what the old project left behind
        self.projectChanged.emit(project)
        self.image_list.set_documents(project.documents)
        self.label_panel.set_schema(project.schema)
        if project.documents:
            self.open_document(project.documents[0].uid)
        else:
            self.currentDocumentChanged.emit(None)
        self._update_title()
        self._update_actions()
        if self.settings is not None:
            self.settings.setValue("project/last", str(project.folder))
            recent = [str(project.folder)] + [p for p in self.recent_projects()
                                              if p != str(project.folder)]
            self.settings.setValue("project/recent", recent[:RECENT_MAX])
        if project.problems:
            problems, project.problems = list(project.problems), []
            project_io.show_problems(self, "Some images could not be opened",
                                     "The rest of the project opened normally:", problems)

    def recent_projects(self) -> list[str]:
        """Folders of recently opened projects that still exist, newest first."""
        if self.settings is None:
            return []
        value = self.settings.value("project/recent", [])
        items = [value] if isinstance(value, str) else list(value or [])
        return [p for p in items if project_io.is_project_folder(Path(p))]

    def _fill_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        current = str(self.project.folder) if self.project is not None else None
        for i, folder in enumerate(self.recent_projects()):
            act = menu.addAction(f"&{i + 1} {Path(folder).name} — {folder}"
                                 if i < 9 else f"{Path(folder).name} — {folder}")
            act.setEnabled(folder != current)
            act.triggered.connect(lambda _c=False, f=folder: self.open_project(Path(f)))
        if menu.isEmpty():
            menu.addAction("(none yet)").setEnabled(False)

    @staticmethod
    def _autosave_time(project: Project) -> datetime | None:
        path = Path(project.folder) / ".autosave" / "autosave.json"
        try:
            return datetime.fromtimestamp(path.stat().st_mtime)
        except OSError:
            return None

    def ask_restore(self, when: datetime | None) -> bool:
        """Ask whether to restore an autosave (a method so tests answer without a dialog)."""
        stamp = when.strftime("%Y-%m-%d %H:%M:%S") if when else "an earlier session"
        return project_io.ask_yes_no(self, "Restore unsaved changes",
                                     f"Restore unsaved changes from {stamp}?")

    def ask_save_changes(self) -> str:
        """"save", "discard" or "cancel" for unsaved changes on close (tests replace it)."""
        B = QMessageBox.StandardButton
        answer = QMessageBox.question(
            self, "Unsaved changes",
            f"Save the changes to '{self.project.name if self.project else ''}' before closing?",
            B.Save | B.Discard | B.Cancel, B.Save)
        return {B.Save: "save", B.Discard: "discard"}.get(answer, "cancel")

    def new_project(self) -> None:
        dlg = project_io.NewProjectDialog(self, default_projects_dir())
        if dlg.exec() != project_io.QDialog.DialogCode.Accepted:
            return
        folder, schema, name = dlg.values()
        if project_io.is_project_folder(folder):
            self.show_error(f"'{folder}' already holds a project; open it instead.")
            return
        if not self._may_leave_project():
            return
        try:
            self.set_project(Project.create(folder, schema, name=name))
        except UsgenError as exc:
            self.show_error(str(exc))

    def open_project_dialog(self) -> None:


        path = QFileDialog.getExistingDirectory(self, "Open project",
                                                str(default_projects_dir()))
        if path:
            self.open_project(Path(path))

    def open_project(self, folder: Path) -> bool:
        """Open the project in ``folder``; the current one stays open if that fails."""
        try:
            project = Project.open(folder)  # read first: a broken folder costs nothing
        except UsgenError as exc:
            self.show_error(str(exc))
            return False
        if not self._may_leave_project():
            return False
        self.set_project(project)
        return True

    def _may_leave_project(self) -> bool:
        """Save, discard or keep the current project's changes before it is replaced."""
        project = self.project
        if project is None or not project.is_dirty():
            return True
        choice = self.ask_save_changes()
        if choice == "save":
            return self.save()
        if choice == "discard":
            project.discard_autosave()
            return True
        return False

    def save(self) -> bool:
        if self.project is None:
            return False
        try:
            self.project.save()
        except UsgenError as exc:
            self.show_error(str(exc))
            return False
        self.autosaver.reset()
        self._update_title()
        self.statusBar().showMessage(f"Saved {self.project.name}", 3000)
        return True


    # -- import / export -----------------------------------------------------------------
    def import_files_dialog(self) -> None:


        paths, _ = QFileDialog.getOpenFileNames(self, "Import images", self._last_dir(),
                                                project_io.IMAGE_FILTER)
        if paths:
            self._remember_dir(Path(paths[0]).parent)
            self.import_paths([Path(p) for p in paths])

    def import_folder_dialog(self) -> None:


        path = QFileDialog.getExistingDirectory(self, "Import folder or dataset",
                                                self._last_dir())
        if path:
            self._remember_dir(Path(path))
            self.import_paths([Path(path)])

    def is_demo_project(self) -> bool:
        return self.project is not None and is_demo_folder(self.project.folder)

    def ask_import_into_demo(self, name: str) -> str:
        """"new", "demo" or "cancel" when the user imports into the demo project (tests
        replace it): the demo's synthetic pairs must not end up in the user's dataset."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Import")
        box.setText(f"The open project is the Demo (synthetic examples). Import '{name}' into "
                    "a new project of its own?")
        new = box.addButton("New project", QMessageBox.ButtonRole.AcceptRole)
        demo = box.addButton("Add to the Demo", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(new)
        box.exec()
        clicked = box.clickedButton()
        return "new" if clicked is new else "demo" if clicked is demo else "cancel"

    def _leave_demo_for(self, paths: list[Path]) -> bool:
        """Before importing into the demo: ask, and open a new project named after the first
        path when the user wants one. False when the import should not go on."""
        first = paths[0]
        name = first.stem if first.is_file() else first.name
        choice = self.ask_import_into_demo(name)
        if choice == "demo":
            return True
        if choice != "new" or not self._may_leave_project():
            return False
        from usgen_desktop.core.labels import load_preset

        folder = new_project_folder(default_projects_dir(), name)
        try:
            # the preset is a placeholder: an empty project takes the dataset's own schema
            self.set_project(Project.create(folder, load_preset("busi"), name=folder.name))
        except UsgenError as exc:
            self.show_error(str(exc))
            return False
        return True

    def import_paths(self, paths: list[Path]) -> list[Document]:
        """Import image files and/or dataset folders; problems go to one dialog at the end."""
        if self.project is None or not paths:
            return []
        if self.is_demo_project() and not self._leave_demo_for(paths):
            return []
        was_clean = not self.project.is_dirty()
        docs: list[Document] = []
        problems: list[str] = []
        files = [p for p in paths if not p.is_dir()]
        try:
            for folder in (p for p in paths if p.is_dir()):
                from usgen_desktop.io import open_dataset

                result = project_io.run_with_progress(
                    self, f"Importing {folder.name}…", open_dataset, folder)
                if not self.project.documents and not docs and result.schema is not None:
                    # an empty project takes the dataset's own label description
                    self.apply_schema(result.schema)
                elif result.schema is not None:
                    problems.extend(project_io.schema_clashes(self.project.schema,
                                                              result.schema))
                docs.extend(result.documents)
                problems.extend(result.problems)
            if files:
                found, bad = project_io.run_with_progress(
                    self, "Importing images…", project_io.documents_from_files, files,
                    self.project.schema)
                docs.extend(found)
                problems.extend(bad)
        except Cancelled:
            self.statusBar().showMessage("Import cancelled; nothing was added.", 5000)
            return []
        except UsgenError as exc:
            self.show_error(str(exc))
            return []
        self.add_documents(docs, select=bool(docs))
        if docs and was_clean:
            # Nothing of the user's was pending, so saving commits only the import: the
            # images and the schema it chose are then in the project folder, not only in
            # the autosave (which keeps label maps, not the schema).
            self.save()
        n = len(docs)
        self.statusBar().showMessage(f"Imported {n} image{'s' if n != 1 else ''}", 5000)
        project_io.show_problems(
            self, "Import problems",
            f"Imported {n} image{'s' if n != 1 else ''}. The import went on past each of "
            f"these {len(problems)} note{'s' if len(problems) != 1 else ''}:", problems)
        return docs

    def export_dialog(self) -> None:
        if self.project is None:
            return
        from usgen_desktop.gui.export_dialog import ExportDialog

        dlg = ExportDialog(self, self.project, selected=self.image_list.selected_uids(),
                           settings=self.settings)
        dlg.exec()

    def _last_dir(self) -> str:
        if self.settings is not None:
            return str(self.settings.value("import/last_dir", str(Path.home())))
        return str(Path.home())

    def _remember_dir(self, path: Path) -> None:
        if self.settings is not None:
            self.settings.setValue("import/last_dir", str(path))
