"""Adds the Smart (click to mask) tool to the main window, the choice of its model, and a
"Smart tool model" box in the Train dock that fine-tunes it on the project's painted masks.

The model folder is the shipped ``models/assist-default`` unless the user picked another (a
fine-tuned one from the Train dock's "Use this model", or Tools › Smart tool model…); the
choice is kept in the window's settings. Nothing is loaded here: the tool loads its model on
the first click, in the worker. Fine-tuning runs in the worker, resumes from its checkpoint
after Cancel, and starts from the model the tool uses now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QCheckBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QMainWindow,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.tasks import CancelToken, ProgressFn
from usgen_desktop.errors import DatasetError, UsgenError
from usgen_desktop.gui.panels.common import run_and_use_buttons, tight_row
from usgen_desktop.gui.smart_tool import SmartTool, default_model_dir
from usgen_desktop.gui.worker import TaskHandle, TaskProgressWidget, report_error, run_task

SETTING = "assist/model_dir"


def use_model(window: QMainWindow, folder: Path | None) -> None:
    """Make the Smart tool use ``folder`` (None: the shipped model) and remember the choice."""
    tool = getattr(window, "tools", {}).get("smart")
    if not isinstance(tool, SmartTool):
        return
    tool.set_model_dir(Path(folder) if folder else default_model_dir(), window.canvas)
    s = getattr(window, "settings", None)
    if s is not None:
        s.setValue(SETTING, str(folder) if folder else "")


def project_objects(documents: Any) -> list:
    """Copies (made in the GUI thread) of what fine-tuning reads from each real document."""
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.labels import LabelMap

    out = []
    for doc in documents or []:
        if doc.image is None or doc.provenance or not doc.has_mask:
            continue
        out.append(Document(LabelMap(doc.labels.data.copy()), doc.schema, doc.image,
                            name=doc.name, tags=dict(doc.tags)))
    return out


def fine_tune_task(docs: list, out_dir: Path, steps: int, resume: bool, init_from: Path | None,
                   *, progress: ProgressFn, cancel: CancelToken) -> Any:
    """Worker task: fine-tune the click-to-mask model on the documents' painted labels."""
    from usgen_desktop.assist.data import samples_from_documents
    from usgen_desktop.assist.train import TrainOptions, train_assist

    samples = samples_from_documents(docs)
    if not samples:
        raise DatasetError("The project has no painted label to learn from yet.")
    opts = TrainOptions(steps=steps, batch=4, lr=3e-4, checkpoint_every=25,
                        balance_sources=False)
    return train_assist(samples, out_dir, opts, init_from=init_from, resume=resume,
                        progress=progress, cancel=cancel)


class AssistTrainBox(QGroupBox):
    """The Train dock's "Smart tool model" box: fine-tune on this project, then use it."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__("Smart tool model (click to mask)")
        self.window_ = window
        self.handle: TaskHandle | None = None
        self.result: Any = None
        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText("a new folder for the fine-tuned model")
        pick = QToolButton()
        pick.setText("…")
        pick.clicked.connect(self._pick_out)
        self.steps = QSpinBox()
        self.steps.setRange(1, 1_000_000)
        self.steps.setSingleStep(100)
        self.steps.setValue(300)
        self.resume = QCheckBox("Resume")
        self.resume.setToolTip("Continue the run saved in the folder from its checkpoint")
        form = QFormLayout()
        form.addRow("Model folder", tight_row(self.out_dir, pick))
        form.addRow("Steps", self.steps)
        form.addRow("", self.resume)
        self.train_button, self.use_button, buttons = run_and_use_buttons(
            "Fine-tune on this project", "Use this model",
            "The Smart tool switches to the model this run saved", self.train, self.use)
        self.train_button.setToolTip("Learn from the masks painted or corrected in the open "
                                     "project, starting from the model the Smart tool uses")
        self.progress = TaskProgressWidget()
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)

    def _pick_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the Smart tool model")
        if folder:
            self.out_dir.setText(folder)

    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.running

    def train(self) -> TaskHandle | None:
        from usgen_desktop.assist.model import is_assist_folder
        from usgen_desktop.assist.train import has_checkpoint

        if self.running:
            return None
        out = self.out_dir.text().strip()
        try:
            if not out:
                raise UsgenError("Choose a folder for the fine-tuned model first.")
            resume = self.resume.isChecked()
            if resume and not has_checkpoint(Path(out)):
                raise UsgenError(f"'{out}' holds no run to resume.")
            docs = project_objects(getattr(getattr(self.window_, "project", None),
                                           "documents", []))
            if not docs:
                raise DatasetError("The project has no painted label to learn from yet.")
        except UsgenError as exc:
            report_error(self.window_, "Train", str(exc))
            return None
        tool = getattr(self.window_, "tools", {}).get("smart")
        init = tool.model_dir if isinstance(tool, SmartTool) else default_model_dir()
        init = init if is_assist_folder(init) else None
        self.result = None
        self.use_button.setEnabled(False)
        self.handle = run_task(self, fine_tune_task, docs, Path(out), int(self.steps.value()),
                               resume, init, title="Fine-tune the Smart tool",
                               on_done=self._on_done, on_cancelled=self._on_cancelled,
                               on_failed=lambda s: report_error(self.window_, "Train", s))
        self.handle.ended.connect(lambda: self.train_button.setEnabled(True))
        self.progress.attach(self.handle, "Reading the painted masks…")
        self.train_button.setEnabled(False)
        return self.handle

    def _on_done(self, result: Any) -> None:
        self.result = result
        self.use_button.setEnabled(result is not None)

    def _on_cancelled(self, _value: Any) -> None:
        self.resume.setChecked(True)  # the checkpoint is there: the next run continues it

    def use(self) -> None:
        if self.result is not None:
            use_model(self.window_, Path(self.result.model_dir))


def _add_train_box(window: QMainWindow) -> AssistTrainBox:
    """Append the box to the Train dock's panel; its own dock when there is no Train dock."""
    box = AssistTrainBox(window)
    dock = window.findChild(QDockWidget, "TrainDock")
    panel = dock.findChild(QWidget, "TrainPanel") if dock is not None else None
    if panel is not None and panel.layout() is not None:
        panel.layout().addWidget(box)
    else:
        own = QDockWidget("Smart tool training", window)
        own.setObjectName("AssistTrainDock")
        own.setWidget(box)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, own)
        own.hide()
    return box


def install(window: QMainWindow) -> SmartTool:
    s = getattr(window, "settings", None)
    saved = str(s.value(SETTING, "") or "") if s is not None else ""
    tool = SmartTool(Path(saved) if saved and Path(saved).is_dir() else None)
    window.register_tool(tool)

    def pick() -> None:
        from usgen_desktop.assist.model import is_assist_folder

        folder = QFileDialog.getExistingDirectory(window, "Smart tool model folder",
                                                  str(tool.model_dir))
        if not folder:
            return
        if not is_assist_folder(Path(folder)):
            window.show_error(f"'{folder}' is not a Smart tool model folder "
                              "(it needs usgen_model.json of kind 'assist').")
            return
        use_model(window, Path(folder))

    act = QAction("Smart tool &model…", window)
    act.triggered.connect(lambda _c=False: pick())
    reset = QAction("Smart tool: use the shipped model", window)
    reset.triggered.connect(lambda _c=False: use_model(window, None))
    menu = getattr(window, "tools_menu", None)
    if menu is not None:
        menu.addAction(act)
        menu.addAction(reset)
    window.assist_train_box = _add_train_box(window)
    return tool
