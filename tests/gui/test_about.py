"""The About box: opens, shows versions, device, licences and citations, closes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui


def test_show_about_opens_and_closes(qtbot):
    from PySide6.QtWidgets import QApplication, QWidget

    from usgen_desktop.gui.about import AboutDialog, show_about

    parent = QWidget()
    qtbot.addWidget(parent)
    dlg = show_about(parent, block=False)
    assert isinstance(dlg, AboutDialog)
    qtbot.waitExposed(dlg)
    assert dlg.isVisible()
    assert "Device found" in dlg.summary.text()
    assert "Al-Dhabyani" in dlg.details.toPlainText()
    dlg.copy_button.click()
    assert "USGen Desktop" in QApplication.clipboard().text()
    dlg.close()
    assert not dlg.isVisible()


def test_show_about_modal_returns_when_closed(qtbot):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from usgen_desktop.gui.about import AboutDialog, show_about

    seen: list[str] = []

    def close_it() -> None:
        for w in QApplication.topLevelWidgets():
            if isinstance(w, AboutDialog) and w.isVisible():
                seen.append(w.windowTitle())
                w.reject()

    QTimer.singleShot(200, close_it)
    assert show_about(None) is None  # returns only because the timer closed it
    assert seen == ["About USGen Desktop"]


def test_main_window_help_about_uses_this_dialog(qtbot, monkeypatch):
    """Help > About of the editor opens this dialog (not its fallback message box)."""
    import usgen_desktop.gui.about as about_mod
    from usgen_desktop.gui.main_window import MainWindow

    calls = []
    monkeypatch.setattr(about_mod, "show_about", lambda parent: calls.append(parent))
    win = MainWindow(None, load_panels=False)
    qtbot.addWidget(win)
    win.act_about.trigger()
    assert calls == [win]


def test_selftest_window_step_with_network_off(qtbot, tmp_path, monkeypatch, capsys):
    """The GUI build's self-test: the main window opens on the demo project and closes."""
    from tests.unit.test_selftest import _fake_backend, make_demo
    from usgen_desktop.selftest import run_selftest

    _fake_backend(monkeypatch)
    code = run_selftest(out_dir=tmp_path / "o", gui=True, demo_dir=make_demo(tmp_path / "d"))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[ok]   window" in out and "time to window shown" in out
    assert "[ok]   network" in out
