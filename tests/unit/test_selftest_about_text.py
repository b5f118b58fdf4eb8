"""about_text (Qt-free): what Help > About and LICENSES.txt say."""

from __future__ import annotations

import sys

from usgen_desktop import licenses
from usgen_desktop.licenses import about_text, shipped_components


def test_about_text_has_version_torch_build_device_and_citations():
    import torch

    from usgen_desktop import __version__

    text = about_text()
    assert f"USGen Desktop {__version__}" in text
    assert f"torch {torch.__version__.split('+')[0]}" in text
    assert ("CUDA" in text) == bool(torch.version.cuda)
    assert "Device found: " in text
    for needle in ("Al-Dhabyani", "Data in Brief 28:104863", "van den Heuvel", "PLoS ONE",
                   "CC BY 4.0", "research use", "Echo from noise", "J. Med. Imaging",
                   "LGPL-3.0", "Apache-2.0", "BSD-3-Clause"):
        assert needle in text, needle


def test_qt_versions_from_the_gui_are_shown():
    text = about_text({"qt": "6.99.1", "pyside6": "6.99.0"})
    assert "PySide6 6.99.0, Qt 6.99.1" in text


def test_optional_components_listed_only_when_present(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "transformers" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    names = [c.name for c in shipped_components()]
    assert "transformers" not in names
    assert "PyTorch (torch)" in names and "Python" in names
    table = licenses.licenses_text()
    assert "\n  transformers " not in table and "\n  PyTorch (torch) " in table


def test_device_falls_back_when_torch_is_broken(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    info = licenses.runtime_info()
    assert info["torch"] == "not available" and info["device"] == "cpu"
    assert "torch not available" in about_text()


def test_write_licenses_file(tmp_path):
    out = tmp_path / "LICENSES.txt"
    licenses.write_licenses_file(str(out))
    text = out.read_text()
    assert "LGPL-3.0" in text and "Al-Dhabyani" in text
