"""First start with the network off: nothing USGen runs may try to reach the Internet."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys

import pytest

from tests.unit.test_selftest import _fake_backend, make_demo
from usgen_desktop.offline import OFFLINE_ENV, enforce_offline, is_offline


@pytest.fixture
def no_network(monkeypatch):
    """socket.connect / create_connection / getaddrinfo raise and record every attempt."""
    attempts: list[str] = []

    def refuse(what):
        def fn(*args, **kwargs):
            attempts.append(f"{what} {args[1:] if what == 'connect' else args}")
            raise OSError(f"network is off in this test ({what})")
        return fn

    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        return refuse("connect")(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def test_enforce_offline_sets_every_variable():
    env: dict[str, str] = {"HF_HUB_OFFLINE": "0"}
    enforce_offline(env)
    assert is_offline(env)
    assert env["HF_HUB_OFFLINE"] == "1"  # a user's "0" is overridden: the app never needs it
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE",
                "HF_HUB_DISABLE_TELEMETRY"):
        assert env[key] == "1"


def test_allow_network_escape_hatch_leaves_env_alone():
    env = {"USGEN_ALLOW_NETWORK": "1"}
    assert enforce_offline(env) == {}
    assert not is_offline(env)


def test_selftest_with_network_off(no_network, tmp_path, monkeypatch, capsys):
    from usgen_desktop.selftest import run_selftest

    for key in OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    _fake_backend(monkeypatch)
    code = run_selftest(out_dir=tmp_path / "o", gui=False, demo_dir=make_demo(tmp_path / "d"))
    assert code == 0, capsys.readouterr().out
    assert no_network == []
    # the self-test set the offline variables itself
    assert all(os.environ.get(k) == v for k, v in OFFLINE_ENV.items())


def test_import_of_gui_app_and_model_libraries_with_network_off(no_network):
    importlib.import_module("usgen_desktop.gui.app")
    importlib.import_module("usgen_desktop.synthesis.request")
    importlib.import_module("usgen_desktop.licenses").about_text()
    assert no_network == []


def test_first_start_uses_platform_folders_not_the_install(monkeypatch, tmp_path):
    """With no USGEN_* overrides, user data and settings go to platformdirs' folders."""
    from usgen_desktop import paths

    monkeypatch.delenv("USGEN_DATA_DIR", raising=False)
    monkeypatch.delenv("USGEN_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    install = paths.resources_dir().parent
    for folder in (paths.user_data_dir(), paths.user_config_dir()):
        assert folder.is_relative_to(tmp_path / "home")
        assert not folder.resolve().is_relative_to(install.resolve())


def test_frozen_layout_finds_resources_in_meipass(monkeypatch, tmp_path):
    """The packaged app (PyInstaller sets sys._MEIPASS) reads resources/ and models/ there."""
    from usgen_desktop import paths

    monkeypatch.delenv("USGEN_RESOURCES", raising=False)
    monkeypatch.delenv("USGEN_MODELS", raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert paths.resources_dir() == tmp_path / "resources"
    assert paths.models_dir() == tmp_path / "models"


def test_usgen_cli_start_sets_nothing_on_the_network(tmp_path):
    """`usgen --help` in a fresh interpreter with sockets disabled from the first line."""
    code = (
        "import socket\n"
        "def no(*a, **k): raise SystemExit('network attempted')\n"
        "socket.socket.connect = no; socket.create_connection = no; socket.getaddrinfo = no\n"
        "import sys; from usgen_desktop.cli.main import main\n"
        "sys.argv = ['usgen', '--help']\n"
        "try: main()\n"
        "except SystemExit as e: sys.exit(0 if e.code in (0, None) else e.code)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path),
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr
    assert "selftest" in r.stdout
