"""The Train dock: fit a generator to the user's own labelled images, in the worker: the sdm
model, or for Stable Diffusion a segmentation ControlNet (seeds/000, optionally with a UNet LoRA)
or a LoRA with a textual-inversion token (seeds/002).

Trains on a dataset folder or on the open project's real images (generated ones are left out:
a generator must not learn from itself), draws the loss curve live, shows the latest sample
grid, and on Cancel stops at the next step keeping the last checkpoint, so a later run with
"Resume" continues where it stopped. When training ends, "Use in Generate" points the
Generate panel at the new model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn
from usgen_desktop.errors import DatasetError, UsgenError
from usgen_desktop.gui.gallery import ImagePane
from usgen_desktop.gui.loss_plot import LossHistory, LossPlot
from usgen_desktop.gui.panels.common import run_and_use_buttons, tight_row
from usgen_desktop.gui.worker import TaskHandle, TaskProgressWidget, report_error, run_task

PROJECT_SOURCE = "project"
FOLDER_SOURCE = "folder"
SHIPPED_START = "shipped"  # fine-tune the shipped model made for the data's labels
PICK_START = "pick"  # the "Another model…" entry: opens a folder dialog
KINDS = {
    "sdm": "Label-map diffusion (sdm)",
    "controlnet": "ControlNet for Stable Diffusion",
    "lora": "LoRA for Stable Diffusion",
    "refiner": "Texture refiner (sdm)",
}
SD_KINDS = ("controlnet", "lora")
# each trainer's usual recipe (size, steps, batch), set when the user switches to it
KIND_DEFAULTS = {"sdm": (128, 2000, 8), "controlnet": (512, 1000, 1), "lora": (512, 500, 1),
                 "refiner": (128, 2000, 8)}


@dataclasses.dataclass
class TrainJob:
    """What the panel asks the worker to do (plain data: it crosses into the worker thread)."""

    out_dir: Path
    size: int
    steps: int
    batch: int
    sample_every: int
    resume: bool
    dataset: Path | None = None  # a dataset folder, or None to use ``triples``
    triples: list | None = None  # (image uint8, LabelMap, class) from the open project
    schema: Any = None
    device: str = "auto"
    init_from: str | None = None  # None: random weights; SHIPPED_START or a model folder
    kind: str = "sdm"  # a KINDS key
    base: str | None = None  # Stable Diffusion folder (controlnet, lora)
    controlnet: str | None = None  # ControlNet to start from (controlnet) or to condition (lora)
    lora_rank: int = 0  # controlnet: 0 = no LoRA in the same run
    token: str | None = None  # lora: also learn this textual-inversion token
    gpus: int = 1  # >1: torchrun in a subprocess, one process per local GPU (dataset folder)


def gpu_count() -> int:
    """Local CUDA GPUs, cheaply (no torch import while the panel is built)."""
    from usgen_desktop.synthesis.training.distributed import local_gpu_count

    return local_gpu_count()


def project_triples(documents: Any) -> tuple[list, Any]:
    """(image, labels, class) of every real, annotated image of a project."""
    triples, schema = [], None
    for doc in documents:
        if doc.image is None or doc.provenance or not doc.has_mask:
            continue
        triples.append((doc.image.to_uint8().copy(), doc.labels.copy(), doc.klass))
        schema = schema or doc.schema
    return triples, schema


def make_config(job: TrainJob) -> Any:
    """A ``TrainConfig`` from the job, setting only the fields this build's trainer knows."""
    from usgen_desktop.synthesis.training.sdm import TrainConfig

    wanted = {"size": job.size, "steps": job.steps, "batch": job.batch,
              "sample_every": job.sample_every, "device": job.device,
              # a checkpoint at least as often as a sample, so Cancel loses little
              "checkpoint_every": max(1, min(job.sample_every or 250, 250))}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in wanted.items() if k in known})


def train_task(
    job: TrainJob, history: LossHistory, *, progress: ProgressFn, cancel: CancelToken,
    on_sample: Any = None,
) -> Any:
    """The long task: load the data, then ``train_sdm`` (or the ControlNet or LoRA trainer);
    losses go into ``history`` as they come (the worker throttles progress signals, so they must
    not ride on them)."""
    from usgen_desktop.synthesis.training.sdm import train_sdm

    if job.gpus > 1 and job.init_from != SHIPPED_START:
        # the torchrun processes read the folder themselves
        return _train_on_gpus(job, history, job.init_from, progress, cancel, on_sample)
    progress(Progress(0, job.steps, "reading the training images…"))
    if job.dataset is not None:
        from usgen_desktop.synthesis.training.data import from_dataset

        triples, schema = from_dataset(job.dataset)
    else:
        triples, schema = job.triples or [], job.schema
    if not triples:
        raise DatasetError("There are no annotated real images to train on.")
    init_from = job.init_from
    if init_from == SHIPPED_START:
        from usgen_desktop.synthesis.request import shipped_model_for

        found = shipped_model_for(schema)
        if found is None:
            name = getattr(schema, "name", None) or "these"
            raise DatasetError(f"No shipped model was made for the {name} labels; start from "
                               "random weights or choose a model folder.")
        init_from = str(found)
    extra = {"init_from": init_from} if init_from else {}
    if job.gpus > 1:
        return _train_on_gpus(job, history, init_from, progress, cancel, on_sample)

    def relay(p: Progress) -> None:
        prev = p.preview if isinstance(p.preview, dict) else {}
        if prev.get("loss") is not None:
            history.append(int(prev.get("step", p.done)), float(prev["loss"]))
        if job.kind == "refiner" and prev.get("sample") is not None and on_sample is not None:
            # the refiner's grids ride on the preview (train_sdm hands its own to on_sample)
            on_sample((int(prev.get("step", p.done)), prev["sample"]))
        progress(Progress(p.done, p.total, p.message))

    if job.kind in SD_KINDS:
        return _train_sd(job, triples, schema, relay, cancel)
    if job.kind == "refiner":
        return _train_refiner(job, triples, schema, relay, cancel)

    def sample(step: int, grid: np.ndarray) -> None:
        if on_sample is not None:
            on_sample((step, grid))

    return train_sdm(triples, job.out_dir, make_config(job), relay, cancel, on_sample=sample,
                     schema=schema, resume=job.resume, **extra)


def _train_refiner(job: TrainJob, triples: list, schema: Any, progress: ProgressFn,
                   cancel: CancelToken) -> Any:
    """The texture refiner of an sdm model, taught by the images alone (labels unused). The
    model folder becomes a whole sdm model: a copy of the base model (the shipped one for the
    data's labels, or the one chosen in Start from) with the new refiner in ``refiner/``, so
    "Use in Generate" works as for sdm. A base model that has a refiner is fine-tuned from it."""
    import json
    import shutil

    from usgen_desktop.synthesis.backends.refiner import SUBFOLDER, find_refiner
    from usgen_desktop.synthesis.backends.sdm import read_config
    from usgen_desktop.synthesis.request import shipped_model_for
    from usgen_desktop.synthesis.training.refiner import RefinerTrainConfig, train_refiner

    # Start from: random weights = a new refiner for the shipped model of these labels; the
    # shipped model = fine-tune its refiner; another model = that model (and its refiner)
    base = job.init_from if job.init_from not in (None, SHIPPED_START) else None
    base_dir = Path(base) if base else shipped_model_for(schema)
    if base_dir is None or not (Path(base_dir) / "usgen_model.json").is_file():
        name = getattr(schema, "name", None) or "these"
        raise DatasetError(f"A texture refiner belongs to an sdm model, and none was made for the "
                           f"{name} labels; choose one in Start from.")
    out = Path(job.out_dir)
    if not job.resume:
        if (out / "usgen_model.json").exists() or find_refiner(out) is not None:
            raise UsgenError(f"The folder '{out}' already holds a model; choose a new folder "
                             "or tick Resume.")
        shutil.copytree(base_dir, out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(SUBFOLDER, "checkpoints", "samples"))
    side = int(read_config(out).size[0])
    cfg = RefinerTrainConfig(base_size=side, patch=int(job.size), steps=job.steps,
                             batch=job.batch, device=job.device,
                             sample_every=job.sample_every,
                             checkpoint_every=max(1, min(250, job.steps)))
    start = find_refiner(Path(base_dir)) if job.init_from is not None else None
    images = [t[0] for t in triples]
    result = train_refiner(images, out / SUBFOLDER, cfg, progress=progress, cancel=cancel,
                           resume=job.resume, init_from=start if not job.resume else None,
                           info={"data": "the images of the Train dock's source"})
    if not result.cancelled:
        # the texture's gain belongs to this pair (base model, refiner): measured on up to 12
        # of the training images with their label maps (about 5 s each on a CPU)
        from usgen_desktop.synthesis.devices import pick_device
        from usgen_desktop.synthesis.training.refiner import calibrate_model

        pick = np.random.default_rng(0).permutation(len(triples))[:12]
        calibrate_model(out, [triples[int(i)] for i in pick], device=pick_device(cfg.device),
                        progress=progress, cancel=cancel)
    meta_path = out / "usgen_model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.setdefault("training", {})["refiner"] = f"trained in the app from {Path(base_dir).name}"
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    result.model_dir = out
    return result


def _train_sd(job: TrainJob, triples: list, schema: Any, progress: ProgressFn,
              cancel: CancelToken) -> Any:
    """The Stable Diffusion trainers: a ControlNet (resumable) or a LoRA (+ token)."""
    if not job.base:
        raise UsgenError("Choose the Stable Diffusion folder to train for.")
    checkpoint_every = max(1, min(250, job.steps))
    if job.kind == "controlnet":
        from usgen_desktop.synthesis.training.controlnet import (
            ControlNetConfig,
            train_controlnet,
        )

        cfg = ControlNetConfig(steps=job.steps, batch=job.batch, size=job.size,
                               lora_rank=job.lora_rank, device=job.device,
                               checkpoint_every=checkpoint_every)
        return train_controlnet(triples, schema, job.base, job.out_dir, cfg,
                                init_from=job.controlnet or None, progress=progress,
                                cancel=cancel, resume=job.resume)
    from usgen_desktop.synthesis.training.lora import LoraConfig, train_lora

    cfg = LoraConfig(steps=job.steps, batch=job.batch, size=job.size,
                     rank=max(1, job.lora_rank), token=job.token or None, device=job.device)
    return train_lora(triples, schema, job.base, job.out_dir, cfg,
                      controlnet_dir=job.controlnet or None, progress=progress, cancel=cancel)


def _train_on_gpus(job: TrainJob, history: LossHistory, init_from: str | None,
                   progress: ProgressFn, cancel: CancelToken, on_sample: Any) -> Any:
    """``usgen train sdm`` under torchrun on ``job.gpus`` local GPUs (the same recipe: the
    batch is the global batch, only rank 0 writes)."""
    from usgen_desktop.synthesis.training.launch import train_sdm_launched

    cfg = make_config(job)
    args = ["--data", str(job.dataset), "--steps", str(job.steps), "--batch", str(job.batch),
            "--size", str(job.size), "--sample-every", str(job.sample_every),
            "--checkpoint-every", str(cfg.checkpoint_every), "--device", "cuda"]
    if job.resume:
        args.append("--resume")
    if init_from:
        args += ["--init-from", str(init_from)]

    def relay(p: Progress) -> None:
        prev = p.preview if isinstance(p.preview, dict) else {}
        if prev.get("loss") is not None:
            history.append(int(prev.get("step", p.done)), float(prev["loss"]))
        progress(Progress(p.done, p.total, p.message))

    def sample(step: int, grid: np.ndarray) -> None:
        if on_sample is not None:
            on_sample((step, grid))

    return train_sdm_launched(job.gpus, args, job.out_dir, relay, cancel, on_sample=sample)


def checkpoint_step(out_dir: Path) -> int | None:
    """The step of the last checkpoint in ``out_dir``, or None (cheap: no torch)."""
    try:
        from usgen_desktop.synthesis.training import sdm as trainer

        last = trainer.latest_checkpoint(Path(out_dir))
        if last is None:
            return None
        return int(trainer.load_training_state(last).get("step", 0))
    except (ImportError, OSError, ValueError, KeyError, UsgenError):
        return None


class TrainPanel(QWidget):
    """Dataset, output folder, size, steps, batch, resume; live loss curve and samples."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__()
        self.setObjectName("TrainPanel")
        self.window_ = window
        self.handle: TaskHandle | None = None
        self.result: Any = None

        self.kind = QComboBox()
        for key, text in KINDS.items():
            self.kind.addItem(text, key)
        self.kind.setToolTip("What to train: the label-map diffusion model (runs on a CPU), or "
                             "a ControlNet or LoRA for a Stable Diffusion 1.5 folder you have "
                             "(a GPU is advised)")
        self._job: TrainJob | None = None
        self._build_sd_rows()
        self.source = QComboBox()
        self.source.addItem("The open project's images", PROJECT_SOURCE)
        self.source.addItem("A dataset folder", FOLDER_SOURCE)
        self.dataset = QLineEdit()
        self.dataset.setPlaceholderText("image/mask folders, nnU-Net or BUSI layout")
        self.dataset_button = QToolButton()
        self.dataset_button.setText("…")
        self.dataset_button.clicked.connect(self._pick_dataset)
        data_row = tight_row(self.dataset, self.dataset_button)
        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText("a new folder for the model")
        self.out_button = QToolButton()
        self.out_button.setText("…")
        self.out_button.clicked.connect(self._pick_out)
        out_row = tight_row(self.out_dir, self.out_button)
        self.size = QComboBox()
        for s in (64, 128, 256, 512):
            self.size.addItem(f"{s} × {s}", s)
        self.size.setCurrentIndex(1)
        self.steps = QSpinBox()
        self.steps.setRange(1, 10_000_000)
        self.steps.setSingleStep(500)
        self.steps.setValue(2000)
        self.batch = QSpinBox()
        self.batch.setRange(1, 512)
        self.batch.setValue(8)
        self.sample_every = QSpinBox()
        self.sample_every.setRange(0, 1_000_000)
        self.sample_every.setSingleStep(100)
        self.sample_every.setValue(500)
        self.sample_every.setToolTip("Draw sample images every so many steps (0 = never)")
        self.start_from = QComboBox()
        self.start_from.addItem("Random weights (new model)", None)
        self.start_from.addItem("Shipped model (fine-tune)", SHIPPED_START)
        self.start_from.addItem("Another model…", PICK_START)
        self.start_from.setToolTip(
            "Fine-tuning starts from a trained model's weights, so your images teach it their "
            "look in far fewer steps; the model's size and classes are kept")
        self._last_start = 0
        self.start_from.currentIndexChanged.connect(self._start_changed)
        n_gpus = gpu_count()
        self.gpus = QComboBox()
        self.gpus.addItem("1", 1)
        if n_gpus > 1:
            self.gpus.addItem(f"All ({n_gpus})", n_gpus)
        self.gpus.setToolTip(
            "All: one training process per GPU (torchrun); the batch is shared out among "
            "them, so it must be a multiple of the GPU count. Trains on a dataset folder.")
        self.resume = QCheckBox("Resume")
        self.resume.setToolTip("Continue the run saved in the model folder from its last "
                               "checkpoint instead of starting a new one")
        self.resume_hint = QLabel("")
        self.resume_hint.setWordWrap(True)
        self.out_dir.editingFinished.connect(self._check_out_dir)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Train", self.kind)
        form.addRow("Train on", self.source)
        form.addRow("Dataset", data_row)
        form.addRow("Model folder", out_row)
        form.addRow("Start from", self.start_from)
        form.addRow("SD model", self._base_row)
        form.addRow("ControlNet", self._cn_row)
        form.addRow("LoRA rank", self.lora_rank)
        form.addRow("Token", self.token)
        form.addRow("Size", self.size)
        form.addRow("Steps", self.steps)
        form.addRow("Batch", self.batch)
        form.addRow("GPUs", self.gpus)
        form.setRowVisible(self.gpus, n_gpus > 1)  # one GPU or none: nothing to choose
        form.addRow("Samples every", self.sample_every)
        form.addRow("", self.resume)
        form.addRow("", self.resume_hint)

        self.train_button, self.use_button, buttons = run_and_use_buttons(
            "Train", "Use in Generate", "Generate with the model this run saved", self.train,
            self.use_in_generate)
        self.progress = TaskProgressWidget()
        self.plot = LossPlot()
        self.log_y = QCheckBox("Log scale")
        self.log_y.setChecked(True)
        self.log_y.toggled.connect(self.plot.set_log_y)
        self.samples = ImagePane("Latest samples")
        self.samples.set_image(None, "sample images appear here")
        self.samples.setMinimumHeight(120)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.plot, 2)
        lay.addWidget(self.log_y)
        lay.addWidget(self.samples, 2)
        self._form = form
        self.source.currentIndexChanged.connect(self._source_changed)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        for combo in (self.kind, self.source, self.size, self.start_from):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self._restore_settings()
        self._source_changed()
        self._kind_changed()

    # -- form -----------------------------------------------------------------------------
    def _build_sd_rows(self) -> None:
        """The Stable Diffusion trainers' fields: base folder, ControlNet, LoRA rank, token."""
        self.base_dir = QLineEdit()
        self.base_dir.setPlaceholderText("a Stable Diffusion 1.5 folder")
        self.base_dir.setToolTip("The Stable Diffusion 1.5 folder (diffusers layout, "
                                 "safetensors) to train for")
        base_button = QToolButton()
        base_button.setText("…")
        base_button.clicked.connect(lambda: self._pick_into(self.base_dir,
                                                            "Choose the Stable Diffusion folder"))
        self._base_row = QWidget()
        self._base_row.setLayout(tight_row(self.base_dir, base_button))
        self.cn_dir = QLineEdit()
        cn_button = QToolButton()
        cn_button.setText("…")
        cn_button.clicked.connect(lambda: self._pick_into(self.cn_dir,
                                                          "Choose the ControlNet folder"))
        self._cn_row = QWidget()
        self._cn_row.setLayout(tight_row(self.cn_dir, cn_button))
        self.lora_rank = QSpinBox()
        self.lora_rank.setRange(0, 256)
        self.token = QLineEdit()
        self.token.setPlaceholderText("none, or a new word such as <us>")
        self.token.setToolTip("Also learn a textual-inversion token for the class prompts")

    def _pick_into(self, box: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, box.text() or str(Path.home()))
        if folder:
            box.setText(folder)

    @property
    def kind_name(self) -> str:
        return str(self.kind.currentData())

    def _kind_changed(self, *_: Any) -> None:
        """Show the rows the chosen trainer takes; the rest are hidden, not greyed."""
        kind = self.kind_name
        sd = kind in SD_KINDS
        prev = getattr(self, "_shown_kind", None)
        self._shown_kind = kind
        if prev is not None and prev != kind:  # the user switched: that trainer's recipe
            size, steps, batch = KIND_DEFAULTS[kind]
            self.size.setCurrentIndex(max(0, self.size.findData(size)))
            self.steps.setValue(steps)
            self.batch.setValue(batch)
        for field, visible in ((self.start_from, kind in ("sdm", "refiner")),
                               (self.sample_every, kind in ("sdm", "refiner")),
                               (self._base_row, sd), (self._cn_row, sd),
                               (self.lora_rank, sd), (self.token, kind == "lora")):
            field.setVisible(visible)
            label = self._form.labelForField(field)
            if label is not None:
                label.setVisible(visible)
        self.resume.setVisible(kind != "lora")  # a LoRA run has no checkpoints to resume
        if kind == "controlnet":
            self.cn_dir.setPlaceholderText("none: from the base UNet")
            self.cn_dir.setToolTip("A ControlNet folder to start from; empty: a copy of the "
                                   "base UNet's encoder, as the ControlNet paper does")
            self.lora_rank.setSpecialValueText("none")
            self.lora_rank.setMinimum(0)
            self.lora_rank.setToolTip("Also train a LoRA of this rank on the UNet (0: none)")
        elif kind == "lora":
            self.cn_dir.setPlaceholderText("none")
            self.cn_dir.setToolTip("A ControlNet that conditions the LoRA's training on the "
                                   "label maps; empty: the LoRA learns from prompts alone")
            self.lora_rank.setSpecialValueText("")
            self.lora_rank.setMinimum(1)
            self.lora_rank.setToolTip("Rank of the LoRA matrices (8 is usual)")
            if self.lora_rank.value() < 1:
                self.lora_rank.setValue(8)
        self.size.setEnabled(sd or kind == "refiner" or self.start_from.currentData() is None)
        self.size.setToolTip("Crops at the images' own pixels the refiner learns from"
                             if kind == "refiner" else "")
        self.out_dir.setPlaceholderText("a new folder for the " + (
            "ControlNet" if kind == "controlnet" else "LoRA" if kind == "lora" else "model"))
        self.out_dir.setToolTip(self.out_dir.placeholderText())
    def _source_changed(self, *_: Any) -> None:
        folder = self.source.currentData() == FOLDER_SOURCE
        self.dataset.setEnabled(folder)
        self.dataset_button.setEnabled(folder)

    def _start_changed(self, index: int) -> None:
        if self.start_from.itemData(index) == PICK_START:
            folder = QFileDialog.getExistingDirectory(self, "Choose the model to start from")
            if not folder:
                self.start_from.setCurrentIndex(self._last_start)  # back to what it was
                return
            at = self.start_from.findData(folder)
            if at < 0:
                at = self.start_from.count() - 1  # just above "Another model…"
                self.start_from.insertItem(at, Path(folder).name, folder)
                self.start_from.setItemData(at, folder, Qt.ItemDataRole.ToolTipRole)
            self.start_from.setCurrentIndex(at)
            return
        self._last_start = index
        tuning = self.start_from.itemData(index) is not None
        # a fine-tuned model keeps the size of the one it starts from (a refiner's crops do not)
        self.size.setEnabled(not tuning or self.kind_name == "refiner")
        self.size.setToolTip("Fine-tuning keeps the starting model's size" if tuning else "")

    def _pick_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the training dataset")
        if folder:
            self.dataset.setText(folder)

    def _pick_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the model folder")
        if folder:
            self.out_dir.setText(folder)
            self._check_out_dir()

    def _check_out_dir(self) -> None:
        """Tell the user when the folder already holds a run, and tick Resume for them."""
        text = self.out_dir.text().strip()
        step = checkpoint_step(Path(text)) if text else None
        if step is None:
            self.resume_hint.setText("")
            return
        self.resume.setChecked(True)
        self.resume_hint.setText(f"This folder holds a run stopped at step {step}; it resumes "
                                 "from there.")

    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.running

    def make_job(self) -> TrainJob:
        out = self.out_dir.text().strip()
        if not out:
            raise UsgenError("Choose a folder for the model first.")
        kind = self.kind_name
        sd = kind in SD_KINDS
        job = TrainJob(
            out_dir=Path(out), size=int(self.size.currentData()), steps=int(self.steps.value()),
            batch=int(self.batch.value()), sample_every=int(self.sample_every.value()),
            resume=self.resume.isChecked() and kind != "lora",
            init_from=(self.start_from.currentData() if kind in ("sdm", "refiner") else None),
            kind=kind, gpus=int(self.gpus.currentData() or 1) if kind == "sdm" else 1,
        )
        if job.gpus > 1 and job.batch % job.gpus:
            raise UsgenError(f"With {job.gpus} GPUs the batch must be a multiple of "
                             f"{job.gpus} (each GPU takes an equal share); it is {job.batch}.")
        if job.gpus > 1 and self.source.currentData() != FOLDER_SOURCE:
            raise DatasetError("Training on several GPUs reads a dataset folder; choose "
                               "'A dataset folder' or one GPU.")
        if sd:
            base = self.base_dir.text().strip()
            if not base or not Path(base).is_dir():
                raise UsgenError("Choose the Stable Diffusion folder to train for.")
            cn = self.cn_dir.text().strip()
            if cn and not Path(cn).is_dir():
                raise UsgenError(f"The ControlNet folder '{cn}' does not exist.")
            job.base, job.controlnet = base, cn or None
            job.lora_rank = int(self.lora_rank.value())
            job.token = (self.token.text().strip() or None) if kind == "lora" else None
        if self.source.currentData() == FOLDER_SOURCE:
            folder = self.dataset.text().strip()
            if not folder or not Path(folder).is_dir():
                raise DatasetError("Choose the dataset folder to train on.")
            job.dataset = Path(folder)
        else:
            project = getattr(self.window_, "project", None)
            triples, schema = project_triples(getattr(project, "documents", []) or [])
            if not triples:
                raise DatasetError("The project has no annotated real images to train on; "
                                   "open some or choose a dataset folder.")
            job.triples = triples
            job.schema = getattr(project, "schema", None) or schema
        return job

    # -- running --------------------------------------------------------------------------
    def train(self) -> TaskHandle | None:
        if self.running:
            return None
        try:
            job = self.make_job()
        except UsgenError as exc:
            self._show_error(str(exc))
            return None
        self._save_settings()
        if not job.resume:
            self.plot.clear()
        self.samples.set_image(None, "sample images appear here")
        self.use_button.setEnabled(False)
        self.result = None
        self._job = job
        self.handle = run_task(
            self, train_task, job, self.plot.history, title="train",
            item_kwarg="on_sample", on_item=self._on_sample, on_done=self._on_done,
            on_cancelled=self._on_done, on_failed=self._show_error,
            on_progress=lambda _p: self.plot.refresh(),
        )
        self.handle.ended.connect(self._on_ended)
        self.progress.attach(self.handle, "Preparing the training images…")
        self.train_button.setEnabled(False)
        return self.handle

    def cancel(self) -> None:
        if self.running:
            self.progress.cancel()

    def _on_sample(self, item: Any) -> None:
        step, grid = item
        self.samples.caption = f"Samples at step {step}"
        self.samples.set_image(np.asarray(grid))

    def _on_done(self, result: Any) -> None:
        self.plot.refresh()
        if result is None:
            return
        self.result = result
        self.use_button.setEnabled(True)
        self._check_out_dir()

    def _on_ended(self) -> None:
        self.train_button.setEnabled(True)
        self.plot.refresh()
        result = self.result
        if result is not None:
            # after the progress widget's own "Done."/"Cancelled" (ended comes last)
            step = getattr(result, "step", None)
            early = ", stopped early" if getattr(result, "cancelled", False) else ""
            where = getattr(result, "model_dir", None) or getattr(result, "out_dir", None)
            self.progress.message.setText(
                f"Model saved in {where or self.out_dir.text()} (step {step}{early}).")

    def use_in_generate(self) -> None:
        """Point the Generate panel at the model this run saved."""
        from usgen_desktop.gui.panels.generate import GeneratePanel

        if self.result is None:
            return
        panel = self.window_.findChild(GeneratePanel)
        if panel is None:
            return
        job = self._job
        if job is not None and job.kind in SD_KINDS:
            # Stable Diffusion with what was trained: the ControlNet (and its LoRA), or the LoRA
            out = str(job.out_dir)
            panel.backend.setCurrentIndex(panel.backend.findData("controlnet"))
            panel.model_dir.setText(job.base or "")
            fields = panel.sd_fields
            if job.kind == "controlnet":
                fields["controlnet_dir"].setText(out)
                fields["lora"].setText(out if job.lora_rank > 0 else "")
            else:
                fields["controlnet_dir"].setText(job.controlnet or "")
                fields["lora"].setText(out)
                fields["ti_token"].setText(job.token or "")
                fields["ti_embedding"].setText(
                    str(job.out_dir / "learned_embeds.safetensors") if job.token else "")
        else:
            panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
            panel.model_dir.setText(str(self.result.model_dir))
        dock = self.window_.findChild(QDockWidget, "GenerateDock")
        if dock is not None:
            dock.show()
            dock.raise_()

    # -- settings (the window's QSettings, when it has one) -------------------------------
    _SPINS = ("steps", "batch", "sample_every")

    def _restore_settings(self) -> None:
        s = getattr(self.window_, "settings", None)
        if s is None:
            return
        self.dataset.setText(str(s.value("train/dataset", "") or ""))
        self.base_dir.setText(str(s.value("train/sd_base", "") or ""))
        self.cn_dir.setText(str(s.value("train/sd_controlnet", "") or ""))
        self.token.setText(str(s.value("train/sd_token", "") or ""))
        i = self.kind.findData(s.value("train/kind"))
        if i >= 0:
            self.kind.setCurrentIndex(i)
        self.out_dir.setText(str(s.value("train/out_dir", "") or ""))
        for combo, key in ((self.source, "train/source"), (self.size, "train/size")):
            value = s.value(key)
            i = combo.findData(int(value) if key == "train/size" and value else value)
            if i >= 0:
                combo.setCurrentIndex(i)
        for name in self._SPINS:
            value = s.value(f"train/{name}")
            try:
                if value is not None:
                    getattr(self, name).setValue(int(value))
            except (TypeError, ValueError):
                pass  # a hand-edited settings file must not stop the panel
        if self.out_dir.text():
            self._check_out_dir()

    def _save_settings(self) -> None:
        s = getattr(self.window_, "settings", None)
        if s is None:
            return
        s.setValue("train/dataset", self.dataset.text().strip())
        s.setValue("train/kind", self.kind_name)
        s.setValue("train/sd_base", self.base_dir.text().strip())
        s.setValue("train/sd_controlnet", self.cn_dir.text().strip())
        s.setValue("train/sd_token", self.token.text().strip())
        s.setValue("train/out_dir", self.out_dir.text().strip())
        s.setValue("train/source", self.source.currentData())
        s.setValue("train/size", self.size.currentData())
        for name in self._SPINS:
            s.setValue(f"train/{name}", getattr(self, name).value())

    def _show_error(self, sentence: str) -> None:
        report_error(self.window_, "Train", sentence)


def install(window: QMainWindow) -> TrainPanel:
    """Add the Train dock, tabbed with the Generate dock when that is there."""
    from usgen_desktop.gui.panels.generate import scrolled

    panel = TrainPanel(window)
    dock = QDockWidget("Train", window)
    dock.setObjectName("TrainDock")
    dock.setWidget(scrolled(panel))
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    generate = window.findChild(QDockWidget, "GenerateDock")
    if generate is not None:
        window.tabifyDockWidget(generate, dock)
        generate.raise_()
    return panel
