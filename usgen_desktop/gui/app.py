"""Start the editor: ``usgen-desktop [--demo | --project DIR] [--open PATH] [--selftest]``.

With no arguments the last project opens again; on the very first start (no settings yet)
the demo project does, imported once from ``resources/demo`` into the user's projects folder.
Settings live in an INI file under ``paths.user_config_dir()``, never in the install folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path

_T0 = time.perf_counter()
log = logging.getLogger(__name__)

DEMO_NAME = "Demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="usgen-desktop",
        description="USGen Desktop: paint ultrasound label maps, generate images, export pairs.",
    )
    p.add_argument("--demo", action="store_true", help="open the demo project")
    p.add_argument("--project", metavar="DIR", help="open the project in DIR")
    p.add_argument("--open", metavar="PATH",
                   help="open an image, a folder of images or a dataset (BUSI, images/+masks/, "
                        "nnU-Net); without --project it gets a project of its own")
    p.add_argument("--selftest", action="store_true",
                   help="check the installation without opening a window; exit code 0 if fine")
    # For benchmarks/bench_gui.py: quit as soon as the window has been shown.
    p.add_argument("--exit-after-show", action="store_true", help=argparse.SUPPRESS)
    return p


# The libraries Qt's xcb platform plugin loads on Linux, and the Debian/Ubuntu packages that
# hold them. Without one of them QApplication aborts the process with a long Qt message.
XCB_LIBS = (("xcb-cursor", "libxcb-cursor0"), ("xcb-icccm", "libxcb-icccm4"),
            ("xcb-keysyms", "libxcb-keysyms1"), ("xcb-image", "libxcb-image0"),
            ("xcb-render-util", "libxcb-render-util0"), ("xkbcommon-x11", "libxkbcommon-x11-0"))


def missing_xcb_packages() -> list[str]:
    """The packages a real window on this Linux box still needs (empty elsewhere, and when
    Qt is told to draw offscreen or through another platform plugin)."""
    import ctypes.util
    import os

    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or (platform and not platform.startswith("xcb")):
        return []
    return [pkg for lib, pkg in XCB_LIBS if ctypes.util.find_library(lib) is None]


def app_settings():  # noqa: ANN201
    """The app's QSettings: an INI file in the user's config folder."""
    from PySide6.QtCore import QSettings

    from usgen_desktop.paths import user_config_dir

    folder = user_config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return QSettings(str(folder / "usgen-desktop.ini"), QSettings.Format.IniFormat)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_") or "project"


def demo_project():  # noqa: ANN201
    """The demo project: imported from resources/demo the first time, reopened afterwards.

    Without a shipped demo (a source checkout before it was made) an empty project opens.
    """
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.core.tasks import CancelToken, no_progress
    from usgen_desktop.io.project import Project, default_projects_dir, is_project
    from usgen_desktop.paths import resources_dir

    folder = default_projects_dir() / DEMO_NAME
    source = resources_dir() / "demo"
    if is_project(folder):
        project = Project.open(folder)
        if project.documents or not source.is_dir():
            return project  # the user's demo, with whatever they did to it
    elif not source.is_dir():
        return Project.create(folder, load_preset("busi"), name=DEMO_NAME)
    else:
        project = None
    from usgen_desktop.io import open_dataset

    # First start (or an empty demo made before the demo data was installed): import it.
    result = open_dataset(source, progress=no_progress, cancel=CancelToken())
    schema = result.schema or load_preset("busi")
    if project is None:
        project = Project.create(folder, schema, name=DEMO_NAME)
    project.schema = schema
    for doc in result.documents:
        doc.schema = schema
    project.add(result.documents)
    project.save()
    return project


def _project_for_open(path: Path):  # noqa: ANN201
    """(project, needs_import) for ``--open PATH`` without ``--project``."""
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.io.project import Project, default_projects_dir, is_project

    if is_project(path):
        return Project.open(path), False
    folder = default_projects_dir() / _safe_name(path.stem if path.is_file() else path.name)
    if is_project(folder):
        return Project.open(folder), False  # opened before: keep the user's work
    # The preset is a placeholder: an empty project takes the dataset's own schema on import.
    return Project.create(folder, load_preset("busi"), name=folder.name), True


def choose_project(args: argparse.Namespace, settings):  # noqa: ANN001, ANN201
    """(project, paths to import) from the command line and the settings."""
    from usgen_desktop.io.project import Project, is_project

    if args.project:
        project = Project.open(Path(args.project))
        return project, [Path(args.open)] if args.open else []
    if args.open:
        path = Path(args.open).expanduser()
        if not path.exists():
            from usgen_desktop.errors import UsgenError

            raise UsgenError(f"'{path}' does not exist.")
        project, needs_import = _project_for_open(path)
        return project, [path] if needs_import else []
    if args.demo:
        return demo_project(), []
    last = settings.value("project/last", "")
    if last and is_project(Path(str(last))):
        return Project.open(Path(str(last))), []
    return demo_project(), []


def apply_theme(app) -> None:  # noqa: ANN001
    """Fusion with a dark palette: grey-scale images read best on a dark surround."""
    from PySide6.QtGui import QColor, QPalette

    app.setStyle("Fusion")
    pal = QPalette()
    R = QPalette.ColorRole
    for role, rgb in (
        (R.Window, (45, 47, 52)), (R.WindowText, (220, 223, 228)), (R.Base, (32, 34, 38)),
        (R.AlternateBase, (45, 47, 52)), (R.ToolTipBase, (250, 250, 235)),
        (R.ToolTipText, (20, 20, 20)), (R.Text, (220, 223, 228)), (R.Button, (55, 58, 64)),
        (R.ButtonText, (220, 223, 228)), (R.BrightText, (255, 90, 90)),
        (R.Highlight, (56, 117, 215)), (R.HighlightedText, (255, 255, 255)),
        (R.Link, (100, 160, 255)), (R.PlaceholderText, (130, 134, 140)),
    ):
        pal.setColor(role, QColor(*rgb))
    for role in (R.WindowText, R.Text, R.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(110, 114, 120))
    app.setPalette(pal)


def _install_excepthook(window_ref) -> None:  # noqa: ANN001
    """A bug in a slot becomes one sentence in a dialog (traceback to the log), not a crash."""
    from PySide6.QtWidgets import QMessageBox

    from usgen_desktop.errors import UsgenError

    def hook(etype, exc, tb) -> None:  # noqa: ANN001
        if issubclass(etype, KeyboardInterrupt):
            sys.__excepthook__(etype, exc, tb)
            return
        if isinstance(exc, UsgenError):
            msg = str(exc)
        else:
            where = _log_exception(etype, exc, tb)
            msg = ("Something went wrong inside USGen; your work is autosaved. "
                   f"Details were written to {where}.")
        try:
            QMessageBox.warning(window_ref(), "USGen Desktop", msg)
        except Exception:  # noqa: BLE001 - the hook itself must never raise
            sys.__excepthook__(etype, exc, tb)

    sys.excepthook = hook


def _log_exception(etype, exc, tb) -> str:  # noqa: ANN001
    from usgen_desktop.paths import user_data_dir

    path = user_data_dir() / "logs" / "usgen.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} unexpected error ===\n")
            fh.write("".join(traceback.format_exception(etype, exc, tb)))
    except OSError:
        return "the console"
    return str(path)


def main(argv: list[str] | None = None) -> int:
    """Run the editor; returns the process exit code."""
    from usgen_desktop.offline import enforce_offline

    enforce_offline()  # models load from local folders only; no library may reach the network
    argv = list(sys.argv[1:] if argv is None else argv)
    args, qt_args = build_parser().parse_known_args(argv)
    if args.selftest:
        try:
            from usgen_desktop.selftest import run_selftest  # lazily: it may load torch
        except ModuleNotFoundError as exc:
            if exc.name != "usgen_desktop.selftest":
                raise
            print("usgen-desktop: this build has no self-test.", file=sys.stderr)
            return 2
        return int(run_selftest())

    missing = missing_xcb_packages()
    if missing:
        # one sentence instead of Qt's abort ("could not load the Qt platform plugin xcb")
        print("usgen-desktop: a window needs Qt's xcb libraries; install them with: "
              f"sudo apt-get install {' '.join(missing)}", file=sys.stderr)
        return 2

    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication, QMessageBox

    from usgen_desktop.errors import UsgenError
    from usgen_desktop.paths import resources_dir

    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("USGen Desktop")
    app.setOrganizationName("USGen")
    icon = resources_dir() / "icons" / "usgen-256.png"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    apply_theme(app)
    settings = app_settings()

    from usgen_desktop.gui.main_window import MainWindow

    to_import: list[Path] = []
    try:
        project, to_import = choose_project(args, settings)
    except UsgenError as exc:
        QMessageBox.warning(None, "USGen Desktop", str(exc))
        try:  # fall back to the demo so the user still gets a working window
            project = demo_project()
        except UsgenError as exc2:
            QMessageBox.warning(None, "USGen Desktop", str(exc2))
            return 2
    window = MainWindow(project, settings=settings)
    window.show()
    if args.exit_after_show:
        app.processEvents()
        print(f"window shown after {time.perf_counter() - _T0:.3f} s", flush=True)
        window.close()
        window.deleteLater()
        return 0
    if to_import:
        QTimer.singleShot(0, lambda: window.import_paths(to_import))
    _install_excepthook(lambda: window)
    try:
        return int(app.exec())
    finally:
        sys.excepthook = sys.__excepthook__


if __name__ == "__main__":
    raise SystemExit(main())
