"""Adds the Smart (click to mask) tool to the main window, and the choice of its model.

The model folder is the shipped ``models/assist-default`` unless the user picked another (a
fine-tuned one from the Train dock's "Use this model", or Tools › Smart tool model…); the
choice is kept in the window's settings. Nothing is loaded here: the tool loads its model on
the first click, in the worker.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMainWindow

from usgen_desktop.gui.smart_tool import SmartTool, default_model_dir

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
    return tool
