"""The project store: a folder holding a label schema and the user's documents.

Layout::

    project.json          version, name, schema, one entry per document
    images/<uid>.png      the ultrasound image (16-bit stays 16-bit); absent for label-only docs
    labels/<uid>.png      the label map as an index PNG (uint8 ids)
    .autosave/            label maps changed since the last save (crash recovery)

Every file is written to a temporary name and renamed, so a crash leaves the last good copy.
``save`` writes only what changed since the last save; ``autosave`` is cheap enough to run
every few seconds from a timer.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import LabelMap, LabelSchema
from usgen_desktop.errors import DatasetError, UsgenError
from usgen_desktop.io.atomic import (
    dumps_json,
    is_temp_name,
    read_png_exact,
    write_png_atomic,
    write_text_atomic,
)

PROJECT_FILE = "project.json"
AUTOSAVE_DIR = ".autosave"
AUTOSAVE_FILE = "autosave.json"
FORMAT_VERSION = 1


def default_projects_dir() -> Path:
    """Where new projects go unless the user picks a folder: ``user_data_dir()/projects``."""
    from usgen_desktop.paths import user_data_dir

    return user_data_dir() / "projects"


def is_project(folder: Path) -> bool:
    """True when ``folder`` holds a USGen project (a ``project.json``)."""
    return (Path(folder) / PROJECT_FILE).is_file()


class Project:
    """A saved set of documents sharing one label schema.

    ``problems`` lists one sentence per document that could not be loaded on open (the rest
    opens normally).
    """

    def __init__(
        self, folder: Path, schema: LabelSchema, name: str | None = None,
        documents: Iterable[Document] = (),
    ) -> None:
        self.folder = Path(folder)
        self.schema = schema
        self.name = name or self.folder.name
        self.documents: list[Document] = []
        self.problems: list[str] = []
        # per-project settings of the panels (e.g. the Generate panel's LoRA, token, ControlNet
        # folder, strength and prompt), saved in project.json so the project keeps its recipe
        self.settings: dict[str, Any] = {}
        self._saved_settings = _settings_key(self.settings)
        # What is on disk: the revision of each label map and the image object last written.
        self._saved_rev: dict[str, int] = {}
        self._saved_image: dict[str, UltrasoundImage | None] = {}
        self._autosaved_rev: dict[str, int] = {}
        self._removed: set[str] = set()
        self.add(documents)

    # -- create / open ---------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, schema: LabelSchema, name: str | None = None) -> Project:
        """A new, empty project in ``folder`` (created if needed; must not hold a project)."""
        folder = Path(folder)
        if is_project(folder):
            raise DatasetError(f"'{folder}' already holds a project; open it instead.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "images").mkdir(exist_ok=True)
            (folder / "labels").mkdir(exist_ok=True)
        except OSError as exc:
            raise DatasetError(
                f"Could not create the project folder '{folder}' ({exc.strerror or exc})."
            ) from exc
        project = cls(folder, schema, name)
        project.save()
        return project

    @classmethod
    def open(cls, folder: Path) -> Project:
        """Load the project in ``folder``; documents whose files are broken go to ``problems``."""
        folder = Path(folder)
        path = folder / PROJECT_FILE
        if not path.is_file():
            raise DatasetError(f"'{folder}' is not a USGen project (it has no {PROJECT_FILE}).")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            version = int(meta.get("version", 1))
            schema = LabelSchema.from_dict(meta["schema"])
            entries = meta.get("documents", [])
            if not isinstance(entries, list):
                raise TypeError("documents is not a list")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, UsgenError) as exc:
            raise DatasetError(f"The project file '{path}' is damaged and cannot be read.") from exc
        if version > FORMAT_VERSION:
            raise DatasetError(
                f"The project '{folder.name}' was saved by a newer USGen (format {version}); "
                "update USGen to open it."
            )
        project = cls(folder, schema, str(meta.get("name") or folder.name))
        settings = meta.get("settings")
        if isinstance(settings, dict):
            project.settings = settings
            project._saved_settings = _settings_key(settings)
        seen: set[str] = set()
        for n, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                project.problems.append(
                    f"Entry {n} of the project's document list is damaged; it was skipped."
                )
                continue
            try:
                doc = _load_document(folder, entry, schema)
            except (UsgenError, OSError, KeyError, TypeError, ValueError, IndexError) as exc:
                label = display_label(entry)
                reason = str(exc) if isinstance(exc, UsgenError) else "its files are damaged"
                project.problems.append(f"Document '{label}' could not be loaded: {reason}")
                continue
            if doc.uid in seen:
                doc.uid = _new_uid()
            seen.add(doc.uid)
            project.documents.append(doc)
            if doc.uid != entry.get("uid"):
                # Not on disk under this id yet: the next save writes its files.
                project.problems.append(
                    f"Document '{doc.name}' had an id that is not a plain file name; it was "
                    "given a new one."
                )
                continue
            project._saved_rev[doc.uid] = doc.revision
            project._saved_image[doc.uid] = doc.image
        return project

    # -- documents -------------------------------------------------------------------
    def add(self, docs: Iterable[Document]) -> None:
        """Append documents (not written until ``save``/``autosave``)."""
        known = {d.uid for d in self.documents}
        for doc in docs:
            if doc.uid in known:
                raise UsgenError(f"The project already holds a document with id '{doc.uid}'.")
            known.add(doc.uid)
            self.documents.append(doc)
            self._removed.discard(doc.uid)

    def remove(self, uid: str) -> None:
        """Drop a document; its files are deleted on the next ``save``."""
        doc = self.get(uid)
        self.documents.remove(doc)
        self._removed.add(uid)
        self._autosaved_rev.pop(uid, None)

    def get(self, uid: str) -> Document:
        for doc in self.documents:
            if doc.uid == uid:
                return doc
        raise KeyError(uid)

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self):
        return iter(self.documents)

    def is_dirty(self) -> bool:
        """True when something changed since the last save."""
        if self._removed or _settings_key(self.settings) != self._saved_settings:
            return True
        return any(
            self._saved_rev.get(d.uid) != d.revision or self._saved_image.get(d.uid, 0) is not d.image
            for d in self.documents
        )

    # -- save ------------------------------------------------------------------------
    def save(self) -> None:
        """Write what changed since the last save, then project.json; clears the autosave."""
        try:
            (self.folder / "images").mkdir(parents=True, exist_ok=True)
            (self.folder / "labels").mkdir(parents=True, exist_ok=True)
            for doc in self.documents:
                if doc.image is not None and self._saved_image.get(doc.uid, 0) is not doc.image:
                    write_png_atomic(self._image_path(doc.uid), doc.image.pixels)
                elif doc.image is None and self._image_path(doc.uid).exists():
                    self._image_path(doc.uid).unlink()
                if (self._saved_rev.get(doc.uid) != doc.revision
                        or not self._labels_path(doc.uid).exists()):
                    write_png_atomic(self._labels_path(doc.uid), doc.labels.data)
            # project.json last: until it is renamed the old one still describes valid files.
            write_text_atomic(self.folder / PROJECT_FILE, dumps_json(self._to_dict()))
            for uid in self._removed:
                for path in (self._image_path(uid), self._labels_path(uid)):
                    path.unlink(missing_ok=True)
        except OSError as exc:
            raise UsgenError(
                f"Could not save the project to '{self.folder}' ({exc.strerror or exc})."
            ) from exc
        self._removed.clear()
        self._saved_settings = _settings_key(self.settings)
        for doc in self.documents:
            self._saved_rev[doc.uid] = doc.revision
            self._saved_image[doc.uid] = doc.image
        self.discard_autosave()

    def _to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "app": "usgen-desktop",
            "name": self.name,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "schema": self.schema.to_dict(),
            "documents": [self._entry(d) for d in self.documents],
            **({"settings": self.settings} if self.settings else {}),
        }

    def _entry(self, doc: Document, image_path: str | None = None) -> dict[str, Any]:
        img = doc.image
        return {
            "uid": doc.uid,
            "name": doc.name,
            "tags": doc.tags,
            "parent": doc.parent,
            "provenance": doc.provenance,
            "image": image_path or (f"images/{doc.uid}.png" if img is not None else None),
            "labels": f"labels/{doc.uid}.png",
            "shape": list(doc.shape),
            "source": str(img.source) if img is not None and img.source else None,
            "was_color": bool(img.was_color) if img is not None else False,
            "pixel_spacing": list(img.pixel_spacing) if img and img.pixel_spacing else None,
        }

    def _image_path(self, uid: str) -> Path:
        return _uid_path(self.folder, "images", uid)

    def _labels_path(self, uid: str) -> Path:
        return _uid_path(self.folder, "labels", uid)

    # -- autosave --------------------------------------------------------------------
    @property
    def autosave_dir(self) -> Path:
        return self.folder / AUTOSAVE_DIR

    def autosave(self) -> int:
        """Write label maps changed since the last save or autosave; returns how many.

        Documents never saved also get their image and entry written once, so a crash right
        after an import loses nothing.
        """
        changed = [
            d for d in self.documents
            if d.revision != self._autosaved_rev.get(d.uid, self._saved_rev.get(d.uid))
        ]
        unsaved = [d for d in self.documents if d.uid not in self._saved_rev]
        if not changed and not unsaved and not self._removed:
            return 0
        adir = self.autosave_dir
        try:
            (adir / "labels").mkdir(parents=True, exist_ok=True)
            for doc in changed:
                write_png_atomic(_uid_path(adir, "labels", doc.uid), doc.labels.data)
                self._autosaved_rev[doc.uid] = doc.revision
            new_entries = []
            for doc in unsaved:
                rel = None
                if doc.image is not None:
                    rel = f"{AUTOSAVE_DIR}/images/{doc.uid}.png"
                    path = _uid_path(self.folder / AUTOSAVE_DIR, "images", doc.uid)
                    if not path.exists():
                        path.parent.mkdir(exist_ok=True)
                        write_png_atomic(path, doc.image.pixels)
                if not _uid_path(adir, "labels", doc.uid).exists():
                    write_png_atomic(_uid_path(adir, "labels", doc.uid), doc.labels.data)
                    self._autosaved_rev[doc.uid] = doc.revision
                entry = self._entry(doc, image_path=rel)
                entry["labels"] = f"{AUTOSAVE_DIR}/labels/{doc.uid}.png"
                new_entries.append(entry)
            state = {
                "version": FORMAT_VERSION,
                "time": time.time(),
                "labels": sorted(
                    uid for uid in self._autosaved_rev
                    if (adir / "labels" / f"{uid}.png").exists()
                ),
                "new_documents": new_entries,
                "removed": sorted(self._removed),
                "order": [d.uid for d in self.documents],
            }
            write_text_atomic(adir / AUTOSAVE_FILE, dumps_json(state), fsync=False)
        except OSError as exc:
            raise UsgenError(
                f"Could not autosave into '{adir}' ({exc.strerror or exc})."
            ) from exc
        return len(changed)

    def has_autosave(self) -> bool:
        """True when an autosave newer than the last save exists (e.g. after a crash)."""
        return (self.autosave_dir / AUTOSAVE_FILE).is_file()

    def restore_autosave(self) -> int:
        """Load autosaved label maps (and documents never saved) back; returns how many."""
        state = self._read_autosave_state()
        if state is None:
            return 0
        adir = self.autosave_dir
        restored = 0
        known = {d.uid: d for d in self.documents}
        for entry in _records(state.get("new_documents")):
            if entry.get("uid") in known:
                continue
            try:
                doc = _load_document(self.folder, entry, self.schema, strict_uid=True)
            except (UsgenError, OSError, KeyError, TypeError, ValueError, IndexError):
                self.problems.append(
                    f"An autosaved document '{display_label(entry)}' could not be restored."
                )
                continue
            doc.revision = 1  # differs from every saved revision: the next save writes it
            self.documents.append(doc)
            known[doc.uid] = doc
            self._autosaved_rev[doc.uid] = doc.revision
            restored += 1
        new_uids = {e.get("uid") for e in _records(state.get("new_documents"))}
        for uid in _strings(state.get("labels")):
            doc = known.get(uid)
            if doc is None or uid in new_uids:
                continue
            try:
                data = read_png_exact(_uid_path(adir, "labels", uid))
                new = LabelMap(data)
                if new.shape != doc.shape:
                    raise UsgenError("size changed")
            except (UsgenError, OSError):
                self.problems.append(f"The autosave of '{doc.name}' is damaged; kept the saved one.")
                continue
            if new != doc.labels:
                doc.replace_labels(new, name="restore autosave")
            restored += 1
            self._autosaved_rev[uid] = doc.revision
        for uid in _strings(state.get("removed")):
            if uid in known:
                self.remove(uid)
        order = {uid: i for i, uid in enumerate(_strings(state.get("order")))}
        self.documents.sort(key=lambda d: order.get(d.uid, len(order)))
        return restored

    def discard_autosave(self) -> None:
        """Forget the autosave (after a save, or when the user declines to restore)."""
        shutil.rmtree(self.autosave_dir, ignore_errors=True)
        self._autosaved_rev.clear()

    def _read_autosave_state(self) -> dict[str, Any] | None:
        path = self.autosave_dir / AUTOSAVE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None


def _settings_key(settings: dict[str, Any]) -> str:
    """A comparable snapshot of the settings (to tell whether they changed since the save)."""
    try:
        return json.dumps(settings, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(settings)


_UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _new_uid() -> str:
    return uuid.uuid4().hex[:12]


def valid_uid(uid: object) -> bool:
    """Document ids name files (``labels/<uid>.png``): letters, digits, ``_`` and ``-`` only."""
    return isinstance(uid, str) and bool(_UID_RE.match(uid))


def _uid_path(folder: Path, sub: str, uid: str) -> Path:
    """``folder/sub/<uid>.png``, refused for an id that could leave ``folder``."""
    if not valid_uid(uid):
        raise UsgenError(f"The document id {str(uid)[:40]!r} is not a valid file name.")
    return folder / sub / f"{uid}.png"


def display_label(entry: dict[str, Any]) -> str:
    from usgen_desktop.io.datasets import display_name

    return display_name(entry.get("name") or entry.get("uid") or "?")


def _records(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _spacing(value: Any) -> tuple[float, float] | None:
    """A stored pixel spacing when it is two positive finite numbers, else None."""
    try:
        row, col = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return (row, col) if all(math.isfinite(v) and v > 0 for v in (row, col)) else None


def _load_document(folder: Path, entry: dict[str, Any], schema: LabelSchema,
                   strict_uid: bool = False) -> Document:
    """One document from its project.json entry (paths relative to ``folder``, and inside it).

    A uid that is not a plain id (``../../x``, an absolute path) is replaced by a fresh one so
    the document still opens but can never make a save write outside the project; with
    ``strict_uid`` (autosave entries) such a document is refused.
    """
    from usgen_desktop.paths import inside

    uid = entry["uid"]
    if not valid_uid(uid):
        if strict_uid:
            raise UsgenError("its id is not a valid file name")
        uid = None
    labels_rel = entry.get("labels") or (f"labels/{uid}.png" if uid else None)
    image_rel = entry.get("image")
    image = None
    if image_rel:
        pixels = read_png_exact(inside(folder, str(image_rel), "Its image file"))
        source = entry.get("source")
        image = UltrasoundImage(
            pixels,
            source=Path(source) if isinstance(source, str) and "\x00" not in source else None,
            was_color=bool(entry.get("was_color", False)),
            pixel_spacing=_spacing(entry.get("pixel_spacing")),
        )
    labels_path = inside(folder, str(labels_rel), "Its label file") if labels_rel else None
    if labels_path is not None and labels_path.exists() and not is_temp_name(labels_path):
        labels = LabelMap(read_png_exact(labels_path))
    elif image is not None:
        labels = LabelMap.empty(image.height, image.width)
    elif entry.get("shape"):
        h, w = int(entry["shape"][0]), int(entry["shape"][1])
        if not (1 <= h <= 20000 and 1 <= w <= 20000):
            raise UsgenError(f"its stored size {h}x{w} is impossible")
        labels = LabelMap.empty(h, w)
    else:
        raise UsgenError("its label map is missing")
    from usgen_desktop.io.datasets import display_name

    doc = Document(
        labels=labels,
        schema=schema,
        image=image,
        name=display_name(entry.get("name") or uid or "document"),
        tags=dict(entry["tags"]) if isinstance(entry.get("tags"), dict) else {},
        parent=entry.get("parent") if isinstance(entry.get("parent"), str) else None,
        provenance=dict(entry["provenance"]) if isinstance(entry.get("provenance"), dict)
        else {},
    )
    if uid is not None:
        doc.uid = uid
    return doc
