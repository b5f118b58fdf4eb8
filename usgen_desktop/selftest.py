"""Check an installation end to end: demo project, generation, export, (window).

``usgen-desktop --selftest`` (the installed app) and ``usgen selftest`` (the CLI) run
:func:`run_selftest`. It walks the path a new user takes on first start, prints one line per
step with its time, and exits 0, or non-zero with one sentence saying what is broken:

1. offline: the Hugging Face variables are set and no Internet socket is opened (a guard
   on ``socket`` records any attempt for the whole run, and the run fails if there was one);
2. folders: user data and settings go to the platform's folders, not into the install;
3. demo: ``resources/demo`` opens (io.open_dataset) into a temporary project, saved and reopened;
4. generate: two images from the first demo label map with the default backend;
5. export: both pairs written in the ``folder`` format, then read back and checked;
6. window (GUI builds): the main window opens on the project, is shown, and closes.

Everything is written under a temporary folder (or ``out_dir``); the user's projects and
settings are not touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from usgen_desktop.offline import enforce_offline

# When the process started, for "time to window shown"; the GUI entry module records its
# own start too, which is earlier still and preferred (see _process_age).
_T_IMPORT = time.perf_counter()


class SelftestFailure(Exception):
    """A step failed; ``str()`` is the one sentence the user sees."""


def _process_age() -> float:
    """Seconds since this process started (Linux /proc), else since the earliest clock we have."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            # field 22 (after the ')' that closes the command name) is the start in clock ticks
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        app = sys.modules.get("usgen_desktop.gui.app")
        t0 = getattr(app, "_T0", _T_IMPORT)
        return time.perf_counter() - min(t0, _T_IMPORT)


@contextlib.contextmanager
def network_guard() -> Iterator[list[str]]:
    """Refuse and record every Internet connection attempted from Python while active.

    Local sockets (AF_UNIX: the X server, D-Bus) stay allowed. Yields the list of attempts.
    """
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def is_inet(sock: socket.socket) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6)

    def connect(self: socket.socket, address: Any) -> None:
        if is_inet(self):
            attempts.append(f"connect {address!r}")
            raise OSError("USGen self-test: network access is not allowed")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if is_inet(self):
            attempts.append(f"connect {address!r}")
            raise OSError("USGen self-test: network access is not allowed")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(f"resolve {host!r}")
            raise socket.gaierror("USGen self-test: network access is not allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield attempts
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]


def _gui_possible() -> bool:
    """A window can be made: PySide6 is there and (on Linux) some Qt platform is reachable."""
    import importlib.util

    if importlib.util.find_spec("PySide6") is None:
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("QT_QPA_PLATFORM") or os.environ.get("DISPLAY")
                    or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _Steps:
    """Runs named steps, printing ``[ok] name  1.23 s  detail`` for each."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], str]) -> None:
        t0 = time.perf_counter()
        try:
            detail = fn()
        except SelftestFailure:
            self.echo(f"[FAIL] {name:<9} {time.perf_counter() - t0:6.2f} s")
            raise
        except Exception as exc:  # any other error is reported as one sentence too
            self.echo(f"[FAIL] {name:<9} {time.perf_counter() - t0:6.2f} s")
            from usgen_desktop.errors import UsgenError

            if isinstance(exc, UsgenError):
                raise SelftestFailure(f"{name}: {exc}") from exc
            raise SelftestFailure(
                f"{name} failed with {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        self.echo(f"[ok]   {name:<9} {dt:6.2f} s  {detail}")


def _install_root() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(sys.executable).resolve().parent
    return Path(__file__).resolve().parent.parent


def run_selftest(
    out_dir: str | Path | None = None,
    gui: bool | None = None,
    demo_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Run every step; return 0 when all pass, 1 (after one sentence) when one fails.

    ``out_dir`` keeps the project and export there (else a temporary folder, removed after a
    pass). ``gui`` None shows the main window when Qt can make one (always from the GUI
    entry point), False never, True always. ``demo_dir`` overrides ``resources/demo``.
    """
    echo = echo or (lambda line: print(line, flush=True))
    enforce_offline()
    keep = out_dir is not None
    work = Path(out_dir) if keep else Path(tempfile.mkdtemp(prefix="usgen-selftest-"))
    work.mkdir(parents=True, exist_ok=True)
    want_gui = _gui_possible() if gui is None else gui
    from usgen_desktop import __version__

    kind = "installed build" if getattr(sys, "frozen", False) else "source"
    window = "with" if want_gui else "without"
    echo(f"USGen Desktop {__version__} self-test ({kind}, {window} window) in {work}")
    t_all = time.perf_counter()
    state: dict[str, Any] = {}
    steps = _Steps(echo)
    try:
        with network_guard() as attempts:
            steps.run("offline", lambda: _step_offline())
            steps.run("folders", lambda: _step_folders())
            steps.run("demo", lambda: _step_demo(state, work, demo_dir))
            steps.run("generate", lambda: _step_generate(state))
            steps.run("export", lambda: _step_export(state, work))
            # The default backend needs no torch, so check it on its own: the About box,
            # the diffusion backends and training all need it.
            steps.run("torch", lambda: _step_torch())
            if _default_model() is not None:
                steps.run("model", lambda: _step_model(state))
            if want_gui:
                # The window step reports start-up without the self-test's own work.
                state["steps_s"] = sum(steps.timings.values())
                steps.run("window", lambda: _step_window(state, work))
            if attempts:
                raise SelftestFailure(
                    f"USGen tried to reach the network ({attempts[0]}); it must work offline."
                )
            echo(f"[ok]   {'network':<9} {0:6.2f} s  no connection attempted")
    except SelftestFailure as exc:
        echo(f"self-test FAILED: {exc}")
        echo(f"(files kept in {work})")
        return 1
    echo(f"self-test passed in {time.perf_counter() - t_all:.2f} s")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


# -- steps --------------------------------------------------------------------------------
def _step_offline() -> str:
    from usgen_desktop.offline import OFFLINE_ENV, is_offline

    if not is_offline():
        if os.environ.get("USGEN_ALLOW_NETWORK") == "1":
            return "USGEN_ALLOW_NETWORK=1: offline variables left alone"
        raise SelftestFailure("The offline settings for model libraries could not be set.")
    return f"{len(OFFLINE_ENV)} offline variables set"


def _step_folders() -> str:
    from usgen_desktop.paths import models_dir, resources_dir, user_config_dir, user_data_dir

    install = _install_root()
    data, config = user_data_dir().resolve(), user_config_dir().resolve()
    if getattr(sys, "frozen", False):
        # An installed build must never write into its own folder (often read-only).
        for what, folder in (("user data", data), ("settings", config)):
            if folder.is_relative_to(install):
                raise SelftestFailure(
                    f"The {what} folder {folder} lies inside the install folder {install}."
                )
    if not resources_dir().is_dir():
        raise SelftestFailure(f"The resources folder {resources_dir()} is missing.")
    models = models_dir()
    shipped = sorted(p.name for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
    return (f"data {data}, settings {config}, resources {resources_dir()}, "
            f"models: {', '.join(shipped) or 'none'}")


def _step_demo(state: dict[str, Any], work: Path, demo_dir: str | Path | None) -> str:
    from usgen_desktop.core.tasks import CancelToken, no_progress
    from usgen_desktop.io import open_dataset
    from usgen_desktop.io.project import Project
    from usgen_desktop.paths import resources_dir

    source = Path(demo_dir) if demo_dir is not None else resources_dir() / "demo"
    if not source.is_dir():
        raise SelftestFailure(f"The demo project is missing from this installation ({source}).")
    result = open_dataset(source, progress=no_progress, cancel=CancelToken())
    docs = [d for d in result.documents if d.image is not None]
    if not docs:
        raise SelftestFailure(f"The demo project in {source} holds no images.")
    folder = work / "project"
    if folder.exists():
        shutil.rmtree(folder)
    project = Project.create(folder, result.schema, name="Self-test")
    project.add(result.documents)
    project.save()
    reopened = Project.open(folder)
    if len(reopened.documents) != len(result.documents):
        raise SelftestFailure(
            f"The demo project saved {len(result.documents)} images but reopened "
            f"{len(reopened.documents)}."
        )
    state["project"] = reopened
    state["schema"] = reopened.schema
    # The first document with a non-empty label map: generation has something to follow.
    with_labels = [d for d in reopened.documents
                   if d.image is not None and d.labels.data.any()]
    state["source"] = (with_labels or [d for d in reopened.documents if d.image is not None])[0]
    extra = f", {len(result.problems)} problem(s)" if result.problems else ""
    return (f"{len(result.documents)} images ({result.layout}, schema '{result.schema.name}')"
            f"{extra}")


def _step_generate(state: dict[str, Any]) -> str:
    from usgen_desktop.synthesis.request import DEFAULT_BACKEND, GenerationRequest, run

    src = state["source"]
    klass = src.tags.get("class")
    schema = state["schema"]
    if klass is not None and schema.classes and klass not in schema.classes:
        klass = None
    request = GenerationRequest(
        label_maps=[src.labels], schema=schema, backend=DEFAULT_BACKEND,
        classes=[klass], seed=1234, count=2, device="auto",
    )
    results = run(request)
    if len(results) != 2:
        raise SelftestFailure(f"The {DEFAULT_BACKEND} backend made {len(results)} of 2 images.")
    for res in results:
        if res.image.shape != src.labels.shape or res.image.dtype.name != "uint8":
            raise SelftestFailure(
                f"The {DEFAULT_BACKEND} backend returned an image of shape {res.image.shape} "
                f"for a label map of shape {src.labels.shape}."
            )
        if int(res.image.max()) == int(res.image.min()):
            raise SelftestFailure(f"The {DEFAULT_BACKEND} backend returned a blank image.")
    state["results"] = results
    h, w = src.labels.shape
    return f"2 images {w}x{h} with '{DEFAULT_BACKEND}' on {results[0].provenance.get('device')}"


def _step_export(state: dict[str, Any], work: Path) -> str:
    import json

    import numpy as np

    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.export.pairs import export_pairs
    from usgen_desktop.io import read_image, read_mask

    src = state["source"]
    schema = state["schema"]
    docs = [
        Document(labels=r.label_map.copy(), schema=schema,
                 image=UltrasoundImage(np.array(r.image, dtype=np.uint8, copy=True)),
                 name=f"selftest_{r.index}", tags=dict(src.tags), parent=src.uid,
                 provenance=dict(r.provenance))
        for r in state["results"]
    ]
    out = work / "export"
    if out.exists():
        shutil.rmtree(out)
    report = export_pairs(docs, out, fmt="folder", schema=schema, dataset_name="Selftest")
    if report.count != 2:
        raise SelftestFailure(f"The export holds {report.count} pairs instead of 2.")
    lines = [json.loads(x) for x in report.manifest.read_text(encoding="utf-8").splitlines()
             if x.strip()]
    if len(lines) != 2:
        raise SelftestFailure(f"The export manifest lists {len(lines)} pairs instead of 2.")
    images = sorted((report.out_dir / "images").iterdir())
    masks = sorted((report.out_dir / "masks").iterdir())
    if len(images) != 2 or len(masks) != 2:
        raise SelftestFailure(
            f"The export folder holds {len(images)} images and {len(masks)} masks, not 2 and 2."
        )
    for img_path, mask_path in zip(images, masks, strict=True):
        img = read_image(img_path)
        mask = read_mask(mask_path).data
        if (img.height, img.width) != mask.shape[:2]:
            raise SelftestFailure(f"The exported image {img_path.name} and its mask differ in size.")
        if not any(np.array_equal(img.pixels, d.image.pixels) for d in docs):
            raise SelftestFailure(f"The exported image {img_path.name} differs from the generated one.")
    size = sum(p.stat().st_size for p in report.out_dir.rglob("*") if p.is_file())
    return f"2 pairs, manifest ok, {size / 1024:.0f} KiB in {report.out_dir}"


def _step_torch() -> str:
    import torch

    from usgen_desktop.licenses import runtime_info

    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    if float((x @ x.T).trace()) != 506.0:
        raise SelftestFailure("torch computes wrong results on this machine.")
    info = runtime_info()
    return f"torch {info['torch']} ({info['torch_build']} build), device found: {info['device']}"


def _default_model() -> Path | None:
    """The shipped diffusion model folder, if this installation has one."""
    from usgen_desktop.paths import models_dir

    folder = models_dir() / "sdm-default"
    return folder if (folder / "usgen_model.json").is_file() else None


def _step_model(state: dict[str, Any]) -> str:
    """One small image from the shipped model (2 sampler steps: it proves loading, not quality)."""
    from usgen_desktop.synthesis.request import GenerationRequest, run

    folder = _default_model()
    src = state["source"]
    request = GenerationRequest(
        label_maps=[src.labels], schema=state["schema"], backend="sdm", model_dir=str(folder),
        seed=7, steps=2, count=1, device="auto",
    )
    results = run(request)
    if len(results) != 1 or int(results[0].image.max()) == int(results[0].image.min()):
        raise SelftestFailure(f"The default model in {folder} made no usable image.")
    return f"1 image from {folder.name} on {results[0].provenance.get('device')} (2 steps)"


def _step_window(state: dict[str, Any], work: Path) -> str:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    own_app = app is None
    if own_app:
        app = QApplication([sys.argv[0] if sys.argv else "usgen-desktop"])
        app.setApplicationName("USGen Desktop")
        app.setOrganizationName("USGen")
    try:
        from usgen_desktop.gui import app as gui_app

        gui_app.apply_theme(app)
    except (ImportError, AttributeError):
        pass
    from PySide6.QtGui import QIcon

    from usgen_desktop.gui.main_window import MainWindow
    from usgen_desktop.paths import resources_dir

    icon = resources_dir() / "icons" / "usgen-256.png"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    # A settings file of its own: the self-test must not change the user's layout or recents.
    settings = QSettings(str(work / "selftest-settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(state["project"], settings=settings)
    window.show()
    app.processEvents()
    shown = _process_age()
    if not window.isVisible():
        raise SelftestFailure("The main window could not be shown.")
    hold = float(os.environ.get("USGEN_SELFTEST_HOLD", "0") or 0)
    if hold > 0:  # packaging/smoke_test.sh takes a screenshot of the real window meanwhile
        echo_line = f"window shown; holding {hold:.0f} s for a screenshot"
        print(echo_line, flush=True)
        end = time.perf_counter() + hold
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.05)
    errors = list(getattr(window, "panel_errors", []) or [])
    window.close()
    window.deleteLater()
    app.processEvents()
    platform = app.platformName()
    if errors:
        raise SelftestFailure(f"A panel of the main window failed to load: {errors[0]}")
    own = state.get("steps_s", 0.0)
    return (f"main window shown on '{platform}' {shown:.2f} s after the process started; "
            f"without the self-test's steps ({own:.2f} s): start-up {max(0.0, shown - own):.2f} s "
            "(time to window shown)")
