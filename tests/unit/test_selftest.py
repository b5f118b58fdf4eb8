"""The self-test of the source install (the CI smoke test), and how it reports failures."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import lesion_pair
from usgen_desktop.selftest import network_guard, run_selftest
from usgen_desktop.synthesis import request as req


def make_demo(root: Path, n: int = 2) -> Path:
    """A tiny images/ + masks/ dataset like resources/demo."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = lesion_pair(64, 80, seed=i)
        cv2.imwrite(str(root / "images" / f"case{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"case{i}.png"), mask)
    return root


def _fake_backend(monkeypatch: pytest.MonkeyPatch, blank: bool = False) -> None:
    """A backend that paints Rayleigh noise (or a blank image) and needs nothing installed."""

    class Fake:
        name = "fake"
        model_hash = "0" * 16
        device = "cpu"
        steps_per_item = 1

        def generate(self, label_map, klass, seed, request, map_index, step, cancel):
            if blank:
                return np.zeros(label_map.shape, np.uint8)
            r = np.random.default_rng(seed)
            img = np.clip(r.rayleigh(60, label_map.shape), 0, 255).astype(np.uint8)
            img[label_map.data > 0] //= 3
            return img

    mod = types.ModuleType("usgen_fake_backend")
    mod.load = lambda request: Fake()
    monkeypatch.setitem(sys.modules, "usgen_fake_backend", mod)
    monkeypatch.setitem(req.BACKENDS, req.DEFAULT_BACKEND, "usgen_fake_backend")


def test_selftest_passes_and_keeps_files(tmp_path, monkeypatch, capsys):
    _fake_backend(monkeypatch)
    demo = make_demo(tmp_path / "demo")
    out = tmp_path / "out"
    assert run_selftest(out_dir=out, gui=False, demo_dir=demo) == 0
    text = capsys.readouterr().out
    for step in ("offline", "folders", "demo", "generate", "export", "network"):
        assert f"[ok]   {step}" in text, text
    assert "self-test passed" in text
    # The export it checked is really there: two pairs and a two-line manifest.
    manifests = list(out.rglob("manifest.jsonl"))
    assert len(manifests) == 1
    lines = manifests[0].read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x) for x in lines)
    assert len(list(manifests[0].parent.glob("images/*"))) == 2
    # The project was saved and reopened from out_dir, not from the user's projects folder.
    assert (out / "project").is_dir()


def test_selftest_fails_with_one_sentence_on_missing_demo(tmp_path, capsys):
    code = run_selftest(out_dir=tmp_path / "o", gui=False, demo_dir=tmp_path / "nowhere")
    out = capsys.readouterr().out
    assert code == 1
    failed = [x for x in out.splitlines() if x.startswith("self-test FAILED")]
    assert len(failed) == 1 and "demo project is missing" in failed[0]
    assert "Traceback" not in out


def test_selftest_catches_a_blank_generator(tmp_path, monkeypatch, capsys):
    _fake_backend(monkeypatch, blank=True)
    code = run_selftest(out_dir=tmp_path / "o", gui=False, demo_dir=make_demo(tmp_path / "d"))
    assert code == 1
    assert "blank image" in capsys.readouterr().out


def test_network_guard_refuses_and_records_internet_sockets():
    import socket

    with network_guard() as attempts:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with pytest.raises(OSError):
            s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed, and never tried here
        s.close()
        with pytest.raises(OSError):
            socket.getaddrinfo("huggingface.co", 443)
    assert len(attempts) == 2
    # restored afterwards
    assert socket.socket.connect.__name__ == "connect"
    assert "guard" not in repr(socket.getaddrinfo)


@pytest.mark.skipif(
    importlib.util.find_spec(req.BACKENDS[req.DEFAULT_BACKEND]) is None,
    reason="the default backend is not in this checkout yet",
)
def test_selftest_of_source_install_with_default_backend(tmp_path, capsys):
    """The CI smoke test: the real default backend and the shipped demo (if there is one)."""
    from usgen_desktop.paths import resources_dir

    demo = resources_dir() / "demo"
    demo_dir = demo if demo.is_dir() else make_demo(tmp_path / "demo")
    assert run_selftest(out_dir=tmp_path / "o", gui=False, demo_dir=demo_dir) == 0, \
        capsys.readouterr().out


def test_usgen_selftest_cli(tmp_path, monkeypatch, capsys):
    from usgen_desktop.cli.main import main

    _fake_backend(monkeypatch)
    demo = make_demo(tmp_path / "demo")
    assert main(["selftest", "--demo", str(demo), "--out", str(tmp_path / "o")]) == 0
    assert "self-test passed" in capsys.readouterr().out


def test_selftest_checks_torch_and_a_shipped_default_model(tmp_path, monkeypatch, capsys):
    """With models/sdm-default installed, the self-test also samples it (2 steps)."""
    pytest.importorskip("diffusers")
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.synthesis.backends.sdm import SdmConfig, build_unet, save_model

    cfg = SdmConfig(size=(32, 32), schema=load_preset("busi"),
                    classes=["normal", "benign", "malignant"])
    unet = build_unet(cfg, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8)
    save_model(unet, cfg, tmp_path / "models" / "sdm-default")
    monkeypatch.setenv("USGEN_MODELS", str(tmp_path / "models"))
    _fake_backend(monkeypatch)
    code = run_selftest(out_dir=tmp_path / "o", gui=False, demo_dir=make_demo(tmp_path / "d"))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[ok]   torch" in out and "build), device found:" in out
    assert "[ok]   model" in out and "sdm-default" in out
    assert "models: sdm-default" in out
