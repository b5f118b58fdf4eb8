"""Where resources, the shipped models and the user's data live."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _install_root() -> Path:
    # PyInstaller unpacks data next to the executable (sys._MEIPASS); a source checkout has
    # resources/ and models/ beside the package.
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen)
    return Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    return Path(os.environ.get("USGEN_RESOURCES", _install_root() / "resources"))


def models_dir() -> Path:
    return Path(os.environ.get("USGEN_MODELS", _install_root() / "models"))


def user_data_dir() -> Path:
    """Projects, autosaves and settings: the platform's standard folder, never the install."""
    env = os.environ.get("USGEN_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir as _udd

    return Path(_udd("usgen-desktop", "USGen"))


def user_config_dir() -> Path:
    env = os.environ.get("USGEN_CONFIG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_config_dir as _ucd

    return Path(_ucd("usgen-desktop", "USGen"))
