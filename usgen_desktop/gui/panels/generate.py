"""The Generate dock: make synthetic ultrasound images for label maps, in a worker thread.

The panel turns its form into a ``GenerationRequest`` over copies of the chosen label maps
(so painting on the canvas meanwhile cannot change what is generated), runs
``synthesis.request.run`` through the generic worker, streams each finished result into the
gallery dock, and shows the image as it denoises. Cancel (Esc) stops within one step and keeps
what was finished. Errors arrive as one sentence; out-of-memory and model errors offer a
fallback (the CPU, or the speckle simulator).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import LabelSchema
from usgen_desktop.errors import MissingSectorError, ModelError, OutOfMemoryError, UsgenError
from usgen_desktop.gui.gallery import GalleryItem, GalleryWidget, ImagePane
from usgen_desktop.gui.panels.common import tight_row
from usgen_desktop.gui.worker import TaskHandle, TaskProgressWidget, report_error, run_task

BACKEND_LABELS = {
    "speckle": "Speckle simulator (no model needed)",
    "sdm": "Semantic diffusion model (sdm)",
    "controlnet": "Stable Diffusion (+ ControlNet)",
}
# the Stable Diffusion recipe's fields (seeds/002): request.params key -> what the row shows
SD_FIELDS = {
    "controlnet_dir": ("ControlNet", "none: from the prompt alone", "dir"),
    "lora": ("LoRA", "none, or a LoRA folder", "dir"),
    "ti_token": ("Token", "none, or a token such as <us>", None),
    "ti_embedding": ("Embedding", "the token's .safetensors", "file"),
}
SD_TIPS = {
    "controlnet_dir": "A segmentation ControlNet folder: the image follows the label map. Empty: "
                      "text-to-image from the prompt alone (the image does not follow the map)",
    "lora": "A LoRA folder (pytorch_lora_weights.safetensors) or file, e.g. from the Train dock",
    "ti_token": "A textual-inversion token the prompt starts with, e.g. <us>",
    "ti_embedding": "The token's embedding (.safetensors); empty: the LoRA folder's "
                    "learned_embeds.safetensors",
}
PROJECT_KEY = "generate"  # the panel's entry in project.settings
SCOPES = {
    "current": "Current image",
    "selected": "Selected images",
    "all": "All label maps in the project",
    "waiting": "Label maps without images",
}
FROM_IMAGE = "(each image's own class)"
NO_CLASS = "(no class)"
DEVICES = ["auto", "cpu", "cuda", "mps"]


def default_model_dir(backend: str, schema: LabelSchema | None = None) -> str:
    """The folder a backend uses when the user picks none: for sdm the shipped model made for
    ``schema`` when there is one, else the shipped default model."""
    if backend == "sdm":
        from usgen_desktop.synthesis.request import default_sdm_model

        folder = default_sdm_model(schema)
        if folder is not None:
            return str(folder)
    return ""


def available_devices() -> list[str]:
    """Devices to offer. Asks ``synthesis.devices`` only once torch is loaded (after a first
    diffusion run): importing torch on the GUI thread would freeze the window for seconds."""
    if "torch" not in sys.modules:
        return list(DEVICES)
    try:
        from usgen_desktop.synthesis import devices  # type: ignore[attr-defined]
    except ImportError:
        return list(DEVICES)
    for name in ("available_devices", "available", "list_devices"):
        fn = getattr(devices, name, None)
        if callable(fn):
            try:
                found = [str(d) for d in fn()]
            except Exception:  # noqa: BLE001 - a broken driver must not stop the panel
                return list(DEVICES)
            return ["auto", *[d for d in found if d != "auto"]]
    return list(DEVICES)


def inpaint_region(labels: Any, schema: LabelSchema, margin: int) -> Any:
    """Where inpainting may change the image (``core.lesions.inpaint_region``, shared with
    the command line)."""
    from usgen_desktop.core.lesions import inpaint_region as region_of

    return region_of(labels, schema.sector_id, margin)


def generate_task(request: Any, *, progress: Any, cancel: Any, on_result: Any = None) -> list:
    """The long task the worker runs (imports the synthesis engine only in the thread).

    Each finished result goes to ``on_result`` as ``(result, pictures)``: the gallery's
    thumbnails and outlines are drawn here, in the worker thread, not on the GUI thread."""
    from usgen_desktop.gui.gallery import render
    from usgen_desktop.synthesis.request import run

    def finished(result: Any) -> None:
        if on_result is not None:
            pictures = render(result.image, result.label_map.data, request.schema)
            on_result((result, pictures))

    return run(request, progress, cancel, on_result=finished)


class GeneratePanel(QWidget):
    """The form, Generate button, progress with ETA, and live preview."""

    def __init__(self, window: QMainWindow, gallery: GalleryWidget) -> None:
        super().__init__()
        self.setObjectName("GeneratePanel")
        self.window_ = window
        self.gallery = gallery
        self.handle: TaskHandle | None = None
        self._sources: list[Document] = []
        self._classes: list[str | None] = []
        self._regen_item: GalleryItem | None = None
        self._last_request: Any = None
        self._last_exception: BaseException | None = None
        self._model_dirs: dict[str, str] = {}
        # Backend and model chosen by the panel, not the user: the shipped sdm model made for
        # the current document's schema, else speckle. Any choice of the user's (restored
        # settings, the backend combo, the model field) ends it; it is never overridden.
        self._auto = False
        self._auto_choice: tuple[str, str] | None = None  # (backend, model) the panel chose
        self._auto_schema: tuple | None = None  # the schema the auto choice was made for
        self._applying = False  # the panel itself is changing the form, not the user
        self.ask = self._ask_user  # replaced in tests

        self.backend = QComboBox()
        for key, text in BACKEND_LABELS.items():
            self.backend.addItem(text, key)
        self.model_dir = QLineEdit()
        self.model_button = QToolButton()
        self.model_button.setText("…")
        self.model_button.setToolTip("Choose the model folder")
        self.model_button.clicked.connect(self._pick_model)
        self.model_dir.textEdited.connect(self._model_typed)
        # a long folder shows only its tail in the narrow dock: the tooltip has it whole
        self.model_dir.textChanged.connect(self.model_dir.setToolTip)
        model_row = tight_row(self.model_dir, self.model_button)

        self.klass = QComboBox()
        self.klass.setToolTip("The image class to generate (e.g. benign or malignant)")
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("e.g. breast ultrasound, benign lesion")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("The same seed and settings give the same images")
        self.dice = QToolButton()
        try:  # an icon font: the 🎲 emoji is an empty box where no emoji font is installed
            import qtawesome as qta

            self.dice.setIcon(qta.icon("fa5s.dice", color=self.palette().text().color()))
        except Exception:  # noqa: BLE001 - the icon is decoration; the button must exist
            self.dice.setText("Random")
        self.dice.setToolTip("A random seed")
        self.dice.clicked.connect(self.randomize_seed)
        seed_row = tight_row(self.seed, self.dice)
        self.steps = QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(25)
        self.steps.setToolTip("Sampler steps: more is slower and usually cleaner")
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(1.0)
        self.guidance.setToolTip(
            "How strongly the class or prompt steers the image (1 = off). Above 1 the model "
            "runs twice per step, with and without the class: about 1.9x the time of 1")
        # the cost shows where the user picks it, not only in the tooltip
        self.guidance.valueChanged.connect(
            lambda v: self.guidance.setSuffix("  (~1.9x time)" if v > 1.0 else ""))
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(0.3)
        self.strength.setToolTip("Refinement strength of the img2img pass after the first "
                                 "one (0 = none; the papers use 0.3)")
        self.sd_fields, self._sd_rows = self._make_sd_fields()
        self.keep_prompt = QToolButton()
        self.keep_prompt.setText("Keep")
        self.keep_prompt.setToolTip("Save this prompt in the label schema as the chosen class's "
                                    "prompt (saved with the project)")
        self.keep_prompt.clicked.connect(self.keep_class_prompt)
        self._prompt_row = QWidget()
        self._prompt_row.setLayout(tight_row(self.prompt, self.keep_prompt))
        self._settings_project: Any = None  # the project whose settings the form shows
        # backend-specific settings (request.params): the simulator's probe and frequency,
        # the diffusion sampler
        self.probe = QComboBox()
        self.probe.addItem("(the label schema's probe)", None)
        for name in ("linear", "curvilinear", "phased"):
            self.probe.addItem(name, name)
        self.probe.setToolTip("Transducer geometry of the simulated scan")
        self.frequency = QDoubleSpinBox()
        self.frequency.setRange(0.0, 20.0)
        self.frequency.setSingleStep(0.5)
        self.frequency.setDecimals(1)
        self.frequency.setSuffix(" MHz")
        self.frequency.setSpecialValueText("the probe's default")
        self.frequency.setToolTip("Centre frequency: higher is finer speckle, less depth")
        self.sampler = QComboBox()
        self.sampler.addItem("DPM-Solver++ (fast)", "dpm++")
        self.sampler.addItem("DDIM", "ddim")
        self.count = QSpinBox()
        self.count.setRange(1, 256)
        self.count.setValue(4)
        self.count.setToolTip("Images to generate for each label map")
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.inpaint = QCheckBox("Only the labelled region")
        self.inpaint.setToolTip(
            "Inpainting: the image outside the labelled region (plus a margin) stays as it is, "
            "so a lesion painted onto a healthy scan appears with its exact mask")
        self.margin = QSpinBox()
        self.margin.setRange(0, 64)
        self.margin.setValue(6)
        self.margin.setSuffix(" px")
        self.margin.setToolTip("How far around the region the image may change, to blend in")
        inpaint_row = tight_row(self.inpaint, self.margin)
        self._inpaint_row = inpaint_row
        self.inpaint.toggled.connect(lambda on: self.margin.setEnabled(on))
        self.margin.setEnabled(False)
        self.scope = QComboBox()
        for key, text in SCOPES.items():
            self.scope.addItem(text, key)
        for combo in (self.backend, self.klass, self.device, self.scope):
            # long entries must not make the dock wider than the screen allows
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(10)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Backend", self.backend)
        form.addRow("Model", model_row)
        form.addRow("Class", self.klass)
        form.addRow("Prompt", self._prompt_row)
        form.addRow("Seed", seed_row)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Strength", self.strength)
        for key, (label, _hint, _kind) in SD_FIELDS.items():
            form.addRow(label, self._sd_rows[key])
        form.addRow("Probe", self.probe)
        form.addRow("Frequency", self.frequency)
        form.addRow("Sampler", self.sampler)
        form.addRow("Images each", self.count)
        form.addRow("Device", self.device)
        form.addRow("For", self.scope)
        form.addRow("Inpaint", inpaint_row)
        self._form = form

        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate images for the chosen label maps (Ctrl+G)")
        self.generate_button.setDefault(True)
        self.generate_button.clicked.connect(self.generate)
        self.progress = TaskProgressWidget()
        self.preview = ImagePane("Preview")
        self.preview.setMinimumHeight(100)
        self.preview.set_image(None, "each image appears here\nas it is generated")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(form)
        lay.addWidget(self.generate_button)
        lay.addWidget(self.progress)
        lay.addWidget(self.preview, 1)

        self.backend.currentIndexChanged.connect(self._backend_changed)
        gallery.regenerateRequested.connect(self.regenerate)
        gallery.accepted.connect(self._add_accepted)

        self.shortcut_generate = QShortcut(QKeySequence("Ctrl+G"), window)
        self.shortcut_generate.activated.connect(self.generate)
        self.shortcut_cancel = QShortcut(QKeySequence(Qt.Key.Key_Escape), window)
        self.shortcut_cancel.activated.connect(self.cancel)
        self.shortcut_cancel.setEnabled(False)  # Esc belongs to the canvas tools when idle

        self.klass.currentIndexChanged.connect(self._show_class_prompt)
        sig = getattr(window, "currentDocumentChanged", None)
        if sig is not None:
            sig.connect(self._document_changed)
        sig = getattr(window, "projectChanged", None)
        if sig is not None:
            sig.connect(self._project_changed)
        self._applying = True
        try:
            auto_model = self._restore_settings()
            self._backend_changed()
            if auto_model:
                self.model_dir.setText(auto_model)
            self._auto_choice = self._choice()
        finally:
            self._applying = False
        self.refresh_classes()
        self._choose_automatically()
        self._restore_project_settings()

    # -- form -----------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return str(self.backend.currentData())

    def randomize_seed(self) -> None:
        self.seed.setValue(random.randrange(0, 2**31 - 1))

    def _pick_model(self) -> None:
        start = (self.model_dir.text() or default_model_dir("sdm", self._schema())
                 or str(Path.home()))
        folder = QFileDialog.getExistingDirectory(self, "Choose the model folder", start)
        if folder:
            self._auto = False  # the user's own model from now on
            self.model_dir.setText(folder)
            if self.backend_name == "sdm":
                self._apply_recommendations()

    def _apply_recommendations(self) -> None:
        """Steps and guidance the model folder recommends (the default sdm model draws clear
        lesions at guidance 3 but only faint smudges at 1)."""
        from usgen_desktop.synthesis.request import model_recommendations

        rec = model_recommendations(self.model_dir.text())
        if "guidance" in rec:
            self.guidance.setValue(float(rec["guidance"]))
        if "steps" in rec:
            self.steps.setValue(int(rec["steps"]))

    def _model_typed(self, _text: str) -> None:
        self._auto = False  # typed by the user: theirs from now on

    def _choice(self, backend: str | None = None) -> tuple[str, str]:
        backend = backend or self.backend_name
        return backend, (self.model_dir.text().strip() if backend != "speckle" else "")

    def _still_auto(self) -> bool:
        """Whether the form still shows the panel's own choice (a backend or folder set by
        anyone else, even in code, is the user's)."""
        if self._auto and self._choice() != self._auto_choice:
            self._auto = False
        return self._auto

    def _project_changed(self, _project: Any) -> None:
        """Another project: the old one's results must not be accepted into it (an old BUSI
        lesion would become the new project's label), so they, the preview and the last
        task's progress go; a running generation for the old project stops."""
        if self.running:
            self.progress.cancel()
        self.gallery.clear()
        self.preview.set_image(None, "each image appears here\nas it is generated")
        self.progress.clear()
        self._sources, self._classes, self._regen_item = [], [], None
        self.scope.setCurrentIndex(self.scope.findData("current"))  # e.g. not the last variants
        dock = self.gallery.parentWidget()
        if isinstance(dock, QDockWidget):
            dock.hide()  # shown again with the new project's first result

    def _document_changed(self, _doc: Any) -> None:
        self.refresh_classes()
        self._choose_automatically()
        self._restore_project_settings()

    def _choose_automatically(self) -> None:
        """While the panel (not the user) chooses: sdm with the shipped model made for the
        current document's schema and that model's recommended steps and guidance, else the
        speckle simulator. Checked again when the document's schema changes."""
        schema = self._schema()
        if not self._still_auto() or schema is None:
            return
        key = (schema.name, tuple(sorted(schema.ids)))
        if key == self._auto_schema:
            return
        self._auto_schema = key
        from usgen_desktop.synthesis.request import shipped_model_for

        shipped = shipped_model_for(schema)
        backend, model = ("sdm", str(shipped)) if shipped is not None else ("speckle", "")
        if backend == self.backend_name and (backend != "sdm" or model == self.model_dir.text()):
            return  # e.g. the choice restored from last time: keep its steps and guidance
        self._applying = True
        try:
            self.backend.setCurrentIndex(self.backend.findData(backend))
            if backend == "sdm":
                self.model_dir.setText(model)
                self._apply_recommendations()
            self._auto_choice = self._choice()
        finally:
            self._applying = False

    def _backend_changed(self, *_: Any) -> None:
        name = self.backend_name
        prev = getattr(self, "_shown_backend", None)
        # the folder shown was the panel's choice, not one to remember as the user's
        was_auto = self._auto and prev is not None and self._choice(prev) == self._auto_choice
        if not self._applying:
            self._auto = False  # the user picked a backend: never overridden from now on
        if prev is not None and prev != name and not was_auto:
            self._model_dirs[prev] = self.model_dir.text()  # an automatic choice is not kept
        self._shown_backend = name
        needs_model = name != "speckle"
        diffusion = name in ("sdm", "controlnet")
        self.model_dir.setEnabled(needs_model)
        self.model_button.setEnabled(needs_model)
        self.model_dir.setText(self._model_dirs.get(name)
                               or default_model_dir(name, self._schema()))
        if name == "sdm" and prev is not None and prev != name:
            self._apply_recommendations()  # on a switch only: restored settings stay at start
        self.model_dir.setPlaceholderText(
            {"speckle": "not needed", "sdm": "a trained sdm model folder",
             "controlnet": "a Stable Diffusion 1.5 folder"}.get(name, "")
        )
        self.steps.setEnabled(diffusion)
        self.guidance.setEnabled(diffusion)
        self.strength.setEnabled(name == "controlnet")
        self.prompt.setEnabled(name == "controlnet")
        self.device.setEnabled(diffusion)
        inpaint_label = self._form.labelForField(self._inpaint_row)
        for w in (self.inpaint, self.margin, inpaint_label):
            if w is not None:
                w.setVisible(name == "sdm")
        self._set_row_visible(self._prompt_row, name == "controlnet")
        self._set_row_visible(self.strength, name == "controlnet")
        for row in self._sd_rows.values():
            self._set_row_visible(row, name == "controlnet")
        # settings that do not apply are hidden, not greyed: the simulator has no steps
        for w in (self.steps, self.guidance, self.device):
            self._set_row_visible(w, diffusion)
        self._set_row_visible(self.probe, name == "speckle")
        self._set_row_visible(self.frequency, name == "speckle")
        self._set_row_visible(self.sampler, name == "sdm")

    def _set_row_visible(self, field: QWidget, visible: bool) -> None:
        label = self._form.labelForField(field)
        field.setVisible(visible)
        if label is not None:
            label.setVisible(visible)

    def _schema(self) -> LabelSchema | None:
        doc = self._current_document()
        if doc is not None:
            return doc.schema
        project = getattr(self.window_, "project", None)
        return getattr(project, "schema", None)

    def refresh_classes(self) -> None:
        """Offer the schema's classes (kept selection when it still exists)."""
        keep = self.klass.currentText()
        schema = self._schema()
        classes = list(schema.classes) if schema is not None else []
        self.klass.blockSignals(True)
        self.klass.clear()
        self.klass.addItem(FROM_IMAGE, "__doc__")
        for c in classes:
            self.klass.addItem(c, c)
        self.klass.addItem(NO_CLASS, None)
        idx = self.klass.findText(keep)
        self.klass.setCurrentIndex(idx if idx >= 0 else 0)
        self.klass.blockSignals(False)
        self._show_class_prompt()
        # a schema without classes (HC18, echo) has nothing to choose: hide the row
        self._set_row_visible(self.klass, bool(classes))

    # -- which label maps -----------------------------------------------------------------
    def _current_document(self) -> Document | None:
        fn = getattr(self.window_, "current_document", None)
        return fn() if callable(fn) else None

    def target_documents(self) -> list[Document]:
        scope = self.scope.currentData()
        current = self._current_document()
        if scope == "all":
            project = getattr(self.window_, "project", None)
            docs = list(getattr(project, "documents", []) or [])
            # generated images are results, not label maps waiting for images (a kept
            # variant's provenance says how its label map was made: it is one to generate for)
            docs = [d for d in docs if not d.provenance.get("backend")]
            return docs or ([current] if current is not None else [])
        if scope == "waiting":
            project = getattr(self.window_, "project", None)
            return [d for d in getattr(project, "documents", []) or [] if d.image is None]
        if scope == "selected":
            fn = getattr(self.window_, "selected_documents", None)
            docs = list(fn()) if callable(fn) else []
            return docs or ([current] if current is not None else [])
        return [current] if current is not None else []

    def _class_for(self, doc: Document) -> str | None:
        choice = self.klass.currentData()
        if choice == "__doc__":
            return doc.klass
        return choice

    def build_request(self, docs: list[Document], seed: int | None = None,
                      count: int | None = None, device: str | None = None,
                      backend: str | None = None, label_maps: list | None = None) -> Any:
        """A GenerationRequest over copies of the documents' label maps (or ``label_maps``)."""
        from usgen_desktop.synthesis.request import GenerationRequest

        if not docs:
            raise UsgenError("Open or paint a label map first; there is nothing to generate from.")
        backend = backend or self.backend_name
        diffusion = backend in ("sdm", "controlnet")
        model = self.model_dir.text().strip() if backend == self.backend_name else ""
        if backend != "speckle" and model and not Path(model).is_dir():
            raise ModelError(f"The model folder '{model}' does not exist.")
        maps = label_maps if label_maps is not None else [d.labels.copy() for d in docs]
        init_images = inpaint_masks = None
        if backend == "sdm" and self.inpaint.isChecked():
            init_images, inpaint_masks = [], []
            for doc, lm in zip(docs, maps, strict=True):
                if doc.image is None or doc.image.shape != lm.shape:
                    raise UsgenError(f"'{doc.name}' has no image to keep; inpainting changes "
                                     "part of a real image, so open one or turn it off.")
                region = inpaint_region(lm.data, doc.schema, self.margin.value())
                if not region.any():
                    raise UsgenError(f"Paint the region to change on '{doc.name}' first; its "
                                     "label map has no labelled region.")
                init_images.append(doc.image.to_uint8().copy())
                inpaint_masks.append(region)
        return GenerationRequest(
            label_maps=maps,
            init_images=init_images,
            inpaint_masks=inpaint_masks,
            schema=docs[0].schema,
            backend=backend,
            model_dir=(model or None) if backend != "speckle" else None,
            classes=[self._class_for(d) for d in docs],
            names=[d.name for d in docs],
            prompt=(self.prompt.text().strip() or None) if backend == "controlnet" else None,
            seed=int(self.seed.value()) if seed is None else int(seed),
            steps=int(self.steps.value()) if diffusion else 1,
            guidance=float(self.guidance.value()),
            strength=float(self.strength.value()),
            count=int(self.count.value()) if count is None else int(count),
            device=device or (self.device.currentText() if diffusion else "cpu"),
            params=self._params(backend),
        )

    def _params(self, backend: str) -> dict[str, Any]:
        """The backend's own settings for ``request.params`` (unset ones are left out)."""
        if backend == "speckle":
            params: dict[str, Any] = {}
            if self.probe.currentData():
                params["probe"] = self.probe.currentData()
            if self.frequency.value() > 0:
                params["frequency_mhz"] = float(self.frequency.value())
            return params
        if backend == "sdm":
            return {"sampler": self.sampler.currentData()}
        if backend == "controlnet":
            return {key: text for key, box in self.sd_fields.items()
                    if (text := box.text().strip())}
        return {}

    # -- the Stable Diffusion recipe (controlnet backend) ---------------------------------
    def _make_sd_fields(self) -> tuple[dict[str, QLineEdit], dict[str, QWidget]]:
        """A line edit per SD_FIELDS key (with "…" for paths), each in its own row widget so
        the row can be hidden with its label."""
        fields: dict[str, QLineEdit] = {}
        rows: dict[str, QWidget] = {}
        for key, (label, hint, kind) in SD_FIELDS.items():
            box = QLineEdit()
            box.setObjectName(f"sd_{key}")
            box.setPlaceholderText(hint)
            box.setToolTip(SD_TIPS[key])
            row = QWidget()
            if kind is None:
                lay = QVBoxLayout(row)
                lay.setContentsMargins(0, 0, 0, 0)
                lay.addWidget(box)
            else:
                button = QToolButton()
                button.setText("…")
                button.setToolTip(f"Choose the {label} {'folder' if kind == 'dir' else 'file'}")
                button.clicked.connect(lambda _=False, k=key: self._pick_sd_path(k))
                row.setLayout(tight_row(box, button))
            fields[key], rows[key] = box, row
        return fields, rows

    def _pick_sd_path(self, key: str) -> None:
        label, _hint, kind = SD_FIELDS[key]
        box = self.sd_fields[key]
        start = box.text() or self.model_dir.text() or str(Path.home())
        if kind == "dir":
            path = QFileDialog.getExistingDirectory(self, f"Choose the {label} folder", start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, f"Choose the {label} file", start,
                                                  "safetensors (*.safetensors)")
        if path:
            box.setText(path)

    def _chosen_class(self) -> str | None:
        """The class picked in the form (None for "each image's own" and "no class")."""
        data = self.klass.currentData()
        return data if isinstance(data, str) and data != "__doc__" else None

    def _show_class_prompt(self, *_: Any) -> None:
        """The prompt field's grey hint: what is used when it is left empty."""
        klass = self._chosen_class()
        schema = self._schema()
        if klass is None or schema is None:
            self.prompt.setPlaceholderText("empty: each class's prompt from the label schema")
        else:
            self.prompt.setPlaceholderText(schema.prompt_or_default(klass))
        self.keep_prompt.setEnabled(klass is not None)

    def keep_class_prompt(self) -> None:
        """Save the prompt field as the chosen class's prompt in the label schema (empty: back
        to the built-in one)."""
        klass = self._chosen_class()
        schema = self._schema()
        if klass is None or schema is None:
            self._show_error("Choose a class first; the prompt is kept for that class.")
            return
        new = schema.with_prompt(klass, self.prompt.text())
        apply = getattr(self.window_, "apply_schema", None)
        if callable(apply):
            apply(new)
        else:  # a window without schema editing: the project's schema at least
            project = getattr(self.window_, "project", None)
            if project is not None:
                project.schema = new
            doc = self._current_document()
            if doc is not None:
                doc.schema = new
        self.prompt.clear()
        self._show_class_prompt()
        self._status(f"The prompt for '{klass}' is saved in the label schema.")

    def _project_settings(self) -> dict[str, Any]:
        """What the project keeps of this form: the controlnet backend's recipe."""
        return {"prompt": self.prompt.text().strip(), "strength": float(self.strength.value()),
                **{k: box.text().strip() for k, box in self.sd_fields.items()}}

    def _save_project_settings(self) -> None:
        project = getattr(self.window_, "project", None)
        settings = getattr(project, "settings", None)
        if isinstance(settings, dict) and self.backend_name == "controlnet":
            settings[PROJECT_KEY] = self._project_settings()

    def _restore_project_settings(self) -> None:
        """Show the settings saved with the project, once each time another project opens."""
        project = getattr(self.window_, "project", None)
        if project is None or project is self._settings_project:
            return
        self._settings_project = project
        saved = getattr(project, "settings", {}) or {}
        saved = saved.get(PROJECT_KEY) if isinstance(saved, dict) else None
        if not isinstance(saved, dict):
            # a project without a recipe of its own must not inherit the last project's
            for box in self.sd_fields.values():
                box.clear()
            return
        for key, box in self.sd_fields.items():
            box.setText(str(saved.get(key) or ""))
        self.prompt.setText(str(saved.get("prompt") or ""))
        try:
            self.strength.setValue(float(saved.get("strength", self.strength.value())))
        except (TypeError, ValueError):
            pass  # a hand-edited project file must not stop the panel

    # -- running --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.running

    def generate(self, docs: list[Document] | None = None) -> TaskHandle | None:
        """Start generating for the chosen label maps (Ctrl+G), or for ``docs``."""
        if self.running:
            return None
        docs = self.target_documents() if not docs else list(docs)
        try:
            request = self.build_request(docs)
            request.validate()
        except UsgenError as exc:
            self._show_error(str(exc))
            return None
        self._regen_item = None
        self._save_settings()
        self._save_project_settings()
        return self._start(request, docs)

    def regenerate(self, item: GalleryItem) -> TaskHandle | None:
        """Generate one gallery item again with a new seed, replacing it in place."""
        if item.source is None:
            return None
        if self.running:
            self._status("A generation is running; try a new seed when it has finished.")
            return None
        prov = item.result.provenance
        src = item.source
        try:
            # the same label map the item was made from, and the class it was made for
            request = self.build_request([src], seed=random.randrange(0, 2**31 - 1), count=1,
                                         backend=prov.get("backend") or None,
                                         label_maps=[item.result.label_map.copy()])
        except UsgenError as exc:
            self._show_error(str(exc))
            return None
        request.classes = [item.klass]
        if prov.get("model_dir"):
            request.model_dir = prov["model_dir"]
        self._regen_item = item
        return self._start(request, [src])

    def inpaint_region_of(self, doc: Document, region: Any, klass: str | None,
                          seed: int | None = None) -> TaskHandle | None:
        """Regenerate ``doc``'s image inside ``region`` only, with sdm (the lesion tool's
        Accept); the result reaches the gallery like any other."""
        if self.running:
            self._status("A generation is running; inpaint the lesion when it has finished.")
            return None
        try:
            if doc.image is None or doc.image.shape != doc.shape:
                raise UsgenError(f"'{doc.name}' has no image to inpaint the lesion into.")
            request = self.build_request([doc], seed=seed, count=1, backend="sdm")
            request.model_dir = request.model_dir or default_model_dir("sdm", doc.schema) or None
            request.init_images = [doc.image.to_uint8().copy()]
            request.inpaint_masks = [region]
            request.classes = [klass]
            request.validate()
        except UsgenError as exc:
            self._show_error(str(exc))
            return None
        self._regen_item = None
        return self._start(request, [doc])

    def _start(self, request: Any, docs: list[Document]) -> TaskHandle:
        self._sources = list(docs)
        self._classes = list(request.classes or [None] * len(docs))
        self._last_request = request
        self._last_exception = None
        self.preview.set_image(None, "waiting for the first step…")
        n = request.total
        self.handle = run_task(
            self, generate_task, request, title="generate",
            item_kwarg="on_result", on_item=self._on_result,
            on_preview=self._on_preview, on_failed=self._on_failed,
        )
        self.handle.error.connect(self._remember_error)
        self.handle.ended.connect(self._on_ended)
        what = "label map" if len(docs) == 1 else "label maps"
        self.progress.attach(self.handle, f"Generating {n} image{'s' if n != 1 else ''} for "
                                          f"{len(docs)} {what}…")
        self.generate_button.setEnabled(False)
        self.shortcut_cancel.setEnabled(True)
        return self.handle

    def cancel(self) -> None:
        """Stop after the current step (Esc); finished images stay in the gallery."""
        if self.running:
            self.progress.cancel()

    def _on_preview(self, image: Any) -> None:
        self.preview.set_image(image)

    def _on_result(self, item: Any) -> None:
        result, pictures = item if isinstance(item, tuple) else (item, None)
        if result.source_index >= len(self._sources):
            return  # a result of the previous project's generation, arriving late
        src = self._sources[result.source_index]
        klass = self._classes[result.source_index] if result.source_index < len(
            self._classes) else None
        if self._regen_item is not None and self._regen_item.id in self.gallery.items:
            self.gallery.replace_result(self._regen_item.id, result, pictures)
            self.gallery.select(self._regen_item)
            return
        self.gallery.add_result(result, src, src.schema if src else None, klass,
                                rendered=pictures)
        self._raise_gallery()

    def _raise_gallery(self) -> None:
        dock = self.gallery.parentWidget()
        if isinstance(dock, QDockWidget) and not dock.isVisible():
            dock.show()

    def _remember_error(self, exc: object) -> None:
        self._last_exception = exc if isinstance(exc, BaseException) else None

    def _on_failed(self, sentence: str) -> None:
        if self.preview.image() is None:  # it said "waiting for the first step…" for good
            self.preview.set_image(None, "nothing generated: see the message above")
        exc = self._last_exception
        req = self._last_request
        # run on after the dialog: a fallback starts a new task once this one has ended
        if isinstance(exc, OutOfMemoryError) and req is not None and req.device != "cpu":
            if self.ask(f"{sentence}\n\nTry again on the CPU?"):
                req.device = "cpu"
                self._retry(req)
            return
        if isinstance(exc, MissingSectorError):
            self._offer_fan_detection(sentence)
            return
        if isinstance(exc, ModelError) and req is not None and req.backend != "speckle":
            if self.ask(f"{sentence}\n\nUse the speckle simulator instead (it needs no model)?"):
                req.backend, req.model_dir, req.steps = "speckle", None, 1
                self._retry(req)
            return
        self._show_error(sentence)

    def _offer_fan_detection(self, sentence: str) -> None:
        """One short sentence and a "Detect the fan" button (the sector panel's batch
        detection with its review grid, for the label maps of this generation)."""
        batch = getattr(self.window_, "fan_batch", None)
        if batch is None or not self.ask_detect_fan(sentence):
            if batch is None:
                self._show_error(sentence)
            return
        docs = [d for d in self._sources if d.image is not None]
        if docs:
            batch.start(docs)
        else:
            self._show_error("These label maps have no image to find a fan in; draw one with "
                             "Fan handles (S).")

    def ask_detect_fan(self, sentence: str) -> bool:
        """Whether to detect the fan now (tests replace it)."""
        box = QMessageBox(self.window_)
        box.setWindowTitle("Generate")
        box.setText(sentence)
        go = box.addButton("Detect the fan", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(go)
        box.exec()
        return box.clickedButton() is go

    def _retry(self, request: Any) -> None:
        sources = list(self._sources)

        def start() -> None:
            if self.running:
                QTimer.singleShot(50, start)
                return
            self._start(request, sources)

        QTimer.singleShot(0, start)

    def _on_ended(self) -> None:
        self.generate_button.setEnabled(True)
        self.shortcut_cancel.setEnabled(False)
        self.refresh_devices()

    def refresh_devices(self) -> None:
        """Offer the devices this machine has (known once torch has been loaded)."""
        found = available_devices()
        current = [self.device.itemText(i) for i in range(self.device.count())]
        if found == current:
            return
        keep = self.device.currentText()
        self.device.blockSignals(True)
        self.device.clear()
        self.device.addItems(found)
        self.device.setCurrentIndex(max(0, self.device.findText(keep)))
        self.device.blockSignals(False)

    def _add_accepted(self, doc: Document) -> None:
        add = getattr(self.window_, "add_documents", None)
        if callable(add):
            add([doc], select=False)

    # -- settings (the window's QSettings, when it has one) -------------------------------
    def _settings(self) -> Any:
        return getattr(self.window_, "settings", None)

    def _restore_settings(self) -> str:
        """Put the saved settings in the form; returns the model folder of a saved automatic
        choice ("" when there is none), for the caller to show once the backend is set up."""
        s = self._settings()
        self._auto = True  # no saved settings: the panel chooses until the user does
        if s is None:
            return ""
        for name in BACKEND_LABELS:
            folder = str(s.value(f"generate/model_dir/{name}", "") or "")
            if folder:
                self._model_dirs[name] = folder
        saved = s.value("generate/backend")
        # no backend saved yet (first start): the panel chooses until the user does; a saved
        # automatic choice goes on being automatic
        self._auto = saved is None or str(s.value("generate/auto", "false")).lower() == "true"
        i = self.backend.findData(str(saved or "speckle"))
        if i >= 0:
            self.backend.setCurrentIndex(i)
        auto_model = ""
        if self._auto and saved is not None and self.backend_name != "speckle":
            auto_model = str(s.value("generate/auto_model", "") or "")
        for key, box, cast in (("count", self.count, int), ("steps", self.steps, int),
                               ("guidance", self.guidance, float),
                               ("strength", self.strength, float)):
            value = s.value(f"generate/{key}")
            if value is not None:
                try:
                    box.setValue(cast(value))
                except (TypeError, ValueError):
                    pass  # a hand-edited settings file must not stop the panel
        dev = self.device.findText(str(s.value("generate/device", "auto")))
        if dev >= 0:
            self.device.setCurrentIndex(dev)
        return auto_model

    def _save_settings(self) -> None:
        s = self._settings()
        if s is None:
            return
        s.setValue("generate/backend", self.backend_name)
        auto = self._still_auto()
        s.setValue("generate/auto", auto)
        if auto:  # the panel's choice, not the user's folder for this backend
            s.setValue("generate/auto_model", self.model_dir.text().strip())
        else:
            s.setValue(f"generate/model_dir/{self.backend_name}", self.model_dir.text().strip())
        s.setValue("generate/count", self.count.value())
        s.setValue("generate/steps", self.steps.value())
        s.setValue("generate/guidance", self.guidance.value())
        s.setValue("generate/strength", self.strength.value())
        s.setValue("generate/device", self.device.currentText())

    # -- talking to the user --------------------------------------------------------------
    def _show_error(self, sentence: str) -> None:
        report_error(self.window_, "Generate", sentence)

    def _status(self, text: str) -> None:
        bar = getattr(self.window_, "statusBar", None)
        if callable(bar):
            bar().showMessage(text, 5000)

    def _ask_user(self, question: str) -> bool:
        answer = QMessageBox.question(self.window_, "Generate", question)
        return answer == QMessageBox.StandardButton.Yes


def scrolled(widget: QWidget) -> QScrollArea:
    """The panel in a scroll area, so a short screen scrolls it instead of growing the window."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(widget)
    return area


def install(window: QMainWindow) -> GeneratePanel:
    """Add the Generate and Gallery docks to the main window."""
    gallery = GalleryWidget()
    gallery.setObjectName("Gallery")
    gallery_dock = QDockWidget("Gallery", window)
    gallery_dock.setObjectName("GalleryDock")
    gallery_dock.setWidget(gallery)
    panel = GeneratePanel(window, gallery)
    window.generate_panel = panel  # other panels start a generation (kept variants)
    dock = QDockWidget("Generate", window)
    dock.setObjectName("GenerateDock")
    dock.setWidget(scrolled(panel))
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    labels = window.findChild(QDockWidget, "dock_labels")
    if labels is not None:
        # a short label list leaves the height to the form and preview; deferred until the
        # window has its size (resizing docks of an unshown window distorts the layout)
        QTimer.singleShot(0, lambda: window.resizeDocks([labels, dock], [170, 10_000],
                                                        Qt.Orientation.Vertical))
    # the right column runs to the bottom edge, so the gallery sits under the canvas only
    window.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, gallery_dock)
    gallery_dock.hide()  # room for the canvas until there is something to show
    return panel
