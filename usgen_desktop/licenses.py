"""What ships with USGen Desktop: third-party licences, data citations, the build it runs on.

Qt-free on purpose: the About box (gui/about.py) shows :func:`about_text`, the packaging script
writes it to ``LICENSES.txt`` beside the executable, and tests read it without a display.
torch is imported only inside :func:`runtime_info`, so importing this module stays cheap.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Any

from usgen_desktop import __version__

APP_LICENSE = "Apache-2.0"


@dataclass(frozen=True)
class Component:
    """A third-party part that the one-folder build carries."""

    name: str
    license: str
    note: str = ""
    # the import name that tells whether this build carries it (None: always shipped)
    module: str | None = None


# What the PyInstaller build bundles (the pip distribution names users will search for).
# Licences as each package's metadata states them (checked against the pinned versions).
COMPONENTS: tuple[Component, ...] = (
    Component("Python", "PSF-2.0", "the interpreter and standard library"),
    Component(
        "Qt 6 / PySide6 / shiboken6",
        "LGPL-3.0-only",
        "shipped as separate shared libraries in the install folder, so they can be replaced "
        "(LGPL section 4(d)); source at code.qt.io",
    ),
    Component(
        "PyTorch (torch)",
        "BSD-3-Clause",
        "with bundled parts under Apache-2.0, BSD-2-Clause, BSL-1.0 and MIT",
    ),
    Component("diffusers", "Apache-2.0", module="diffusers"),
    Component("transformers", "Apache-2.0", "for the optional ControlNet backend",
              module="transformers"),
    Component("peft", "Apache-2.0", module="peft"),
    Component("accelerate", "Apache-2.0", module="accelerate"),
    Component("safetensors", "Apache-2.0"),
    Component("huggingface_hub", "Apache-2.0", "used offline only; no hub access"),
    Component("OpenCV (opencv-python-headless)", "Apache-2.0"),
    Component("NumPy", "BSD-3-Clause"),
    Component("SciPy", "BSD-3-Clause"),
    Component("Pillow", "MIT-CMU (HPND)"),
    Component("tifffile", "BSD-3-Clause"),
    Component("pydicom", "MIT"),
    Component("NiBabel", "MIT"),
    Component("platformdirs", "MIT"),
    Component("QtAwesome / QtPy", "MIT"),
    Component(
        "Icon fonts in QtAwesome",
        "SIL OFL-1.1 (fonts), CC BY 4.0 / MIT / Apache-2.0 (icons)",
        "Font Awesome Free, Material Design Icons, Phosphor, Remix Icon, Codicons, Elusive",
    ),
    Component("tqdm", "MPL-2.0 AND MIT"),
    Component(
        "PyInstaller bootloader",
        "GPL-2.0-or-later with the bootloader exception",
        "the exception allows shipping it with software under any licence",
    ),
)


@dataclass(frozen=True)
class Citation:
    """A work the product or its default model rests on, with its terms of use."""

    key: str
    text: str
    terms: str = ""


# The data behind the default model (models/sdm-default): see its model card.
DATA_CITATIONS: tuple[Citation, ...] = (
    Citation(
        "BUSI",
        "Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
        "Data in Brief 28:104863, 2020. doi:10.1016/j.dib.2019.104863",
        "no explicit open licence: research use, cite the paper",
    ),
    Citation(
        "HC18",
        "van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. Automated measurement "
        "of fetal head circumference using 2D ultrasound images. PLoS ONE 13(8):e0200412, "
        "2018. doi:10.1371/journal.pone.0200412",
        "CC BY 4.0",
    ),
)

# The papers the product grew from (shared REFERENCE.md).
PAPER_CITATIONS: tuple[Citation, ...] = (
    Citation(
        "Freiche 2025",
        "Freiche B, El-Khoury A, Nasiri-Sarvi A, Hosseini MS, Garcia D, Basarab A, Boily M, "
        "Rivaz H. Ultrasound Image Generation using Latent Diffusion Models. 2025.",
    ),
    Citation(
        "Wen 2026",
        "Wen Y, Curran KM, Wang X, Healy NA, Healy JJ. Synthesizing breast cancer ultrasound "
        "images from healthy samples using latent diffusion models. J. Med. Imaging "
        "13(2):024002, 2026. doi:10.1117/1.JMI.13.2.024002",
    ),
    Citation(
        "Hybrid 2026",
        "Hybrid Diffusion Model for (Breast) Ultrasound Image Augmentation. IEEE ISBI 2026.",
    ),
    Citation(
        "Stojanovski 2023",
        "Stojanovski D, Hermida U, Lamata P, Beqiri A, Gomez A. Echo from noise: synthetic "
        "ultrasound image generation using diffusion models for real image segmentation. "
        "ASMUS 2023.",
    ),
)


def _pick_device() -> str:
    """The device generation would use: synthesis.devices.pick_device when it exists."""
    try:
        from usgen_desktop.synthesis import devices  # may not exist in every build

        pick = devices.pick_device
    except (ImportError, AttributeError):
        pick = None
    if pick is not None:
        try:
            return str(pick())
        except TypeError:
            return str(pick("auto"))
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def runtime_info(qt: dict[str, str] | None = None) -> dict[str, Any]:
    """Versions and the device found. ``qt`` comes from the GUI (Qt is not imported here);
    without it the PySide6 version is read from package metadata."""
    info: dict[str, Any] = {
        "usgen": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "frozen": bool(getattr(sys, "frozen", False)),
    }
    try:
        import torch

        info["torch"] = torch.__version__.split("+")[0]
        cuda = getattr(torch.version, "cuda", None)
        hip = getattr(torch.version, "hip", None)
        if cuda:
            info["torch_build"] = f"CUDA {cuda}"
        elif hip:
            info["torch_build"] = f"ROCm {hip}"
        else:
            info["torch_build"] = "CPU"
        info["device"] = _pick_device()
        if info["device"].startswith("cuda") and torch.cuda.is_available():
            info["device"] += f" ({torch.cuda.get_device_name(0)})"
    except Exception as exc:  # a broken torch must not break the About box
        info["torch"] = "not available"
        info["torch_build"] = f"({type(exc).__name__})"
        info["device"] = "cpu"
    if qt:
        info.update(qt)
    else:
        try:
            from importlib.metadata import version

            info["pyside6"] = version("PySide6-Essentials")
        except Exception:
            info["pyside6"] = "unknown"
    return info


def shipped_components() -> list[Component]:
    """The components this installation really carries (optional ones only when present)."""
    import importlib.util

    out = []
    for c in COMPONENTS:
        if c.module is not None:
            try:
                if importlib.util.find_spec(c.module) is None:
                    continue
            except (ImportError, ValueError):
                continue
        out.append(c)
    return out


def licenses_text() -> str:
    """The third-party licence table as plain text."""
    shipped = shipped_components()
    width = max(len(c.name) for c in shipped)
    lines = [f"USGen Desktop {__version__} is licensed under {APP_LICENSE}.", "",
             "Third-party software shipped with it:"]
    for c in shipped:
        line = f"  {c.name.ljust(width)}  {c.license}"
        if c.note:
            line += f"  ({c.note})"
        lines.append(line)
    return "\n".join(lines)


def citations_text() -> str:
    """Data and paper citations as plain text."""
    lines = ["Data behind the default model (cite when you publish results made with it):"]
    for c in DATA_CITATIONS:
        lines.append(f"  [{c.key}] {c.text}" + (f" Terms: {c.terms}." if c.terms else ""))
    lines += ["", "Methods this product grew from:"]
    lines += [f"  [{c.key}] {c.text}" for c in PAPER_CITATIONS]
    return "\n".join(lines)


def about_text(qt: dict[str, str] | None = None) -> str:
    """Everything the About box shows, as plain text (version, torch build, device, Qt,
    licences, citations). ``qt`` may carry ``{"qt": ..., "pyside6": ...}`` from the GUI."""
    info = runtime_info(qt)
    head = [
        f"USGen Desktop {info['usgen']}",
        "Paint ultrasound label maps, generate matching synthetic images, export datasets.",
        "Synthetic images are for research and training data only, never for diagnosis.",
        "",
        f"Python {info['python']} on {info['platform']}"
        + (" (installed build)" if info["frozen"] else ""),
        f"torch {info['torch']} ({info['torch_build']} build)",
        f"Device found: {info['device']}",
        f"PySide6 {info.get('pyside6', 'unknown')}"
        + (f", Qt {info['qt']}" if info.get("qt") else ""),
        "",
        "",
    ]
    return "\n".join(head) + licenses_text() + "\n\n" + citations_text() + "\n"


def write_licenses_file(path: str) -> None:
    """Write the licence and citation notice (used by packaging/build.sh for LICENSES.txt)."""
    from pathlib import Path

    Path(path).write_text(
        licenses_text() + "\n\n" + citations_text() + "\n", encoding="utf-8"
    )
