"""The Train dock offers ControlNet and LoRA training for Stable Diffusion beside sdm: the form's
fields reach the trainers, and "Use in Generate" sets up the Stable Diffusion recipe."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.gui.test_train_panel import make_window
from usgen_desktop.core.tasks import Progress

pytestmark = pytest.mark.gui


@dataclasses.dataclass
class FakeResult:
    out_dir: Path
    step: int
    cancelled: bool = False


@pytest.fixture
def fake_sd_trainers(monkeypatch):
    """The ControlNet and LoRA trainers replaced by quick fakes with the same contract."""
    from usgen_desktop.synthesis.training import controlnet, lora

    seen: dict = {}

    def run(name, out_dir, config, progress, cancel, **kw):
        seen[name] = dict(out_dir=out_dir, config=config, **kw)
        for step in range(1, config.steps + 1):
            progress(Progress(step, config.steps, f"step {step}", {"loss": 1.0 / step,
                                                                    "step": step}))
        return FakeResult(Path(out_dir), config.steps)

    def fake_cn(data, schema, base_dir, out_dir, config=None, init_from=None, progress=None,
                cancel=None, resume=False, info=None):
        return run("controlnet", out_dir, config, progress, cancel, data=list(data),
                   base=base_dir, init_from=init_from, resume=resume)

    def fake_lora(data, schema, base_dir, out_dir, config=None, controlnet_dir=None,
                  progress=None, cancel=None):
        return run("lora", out_dir, config, progress, cancel, base=base_dir,
                   controlnet_dir=controlnet_dir)

    monkeypatch.setattr(controlnet, "train_controlnet", fake_cn)
    monkeypatch.setattr(lora, "train_lora", fake_lora)
    return seen


def panel_on(qtbot):
    from usgen_desktop.gui.panels import generate, train

    window = make_window()
    qtbot.addWidget(window)
    gen = generate.install(window)
    panel = train.install(window)
    window.show()
    return window, panel, gen


def test_controlnet_training_from_the_dock_then_use_in_generate(qtbot, fake_sd_trainers,
                                                               tmp_path):
    window, panel, gen = panel_on(qtbot)
    (tmp_path / "sd").mkdir()
    panel.kind.setCurrentIndex(panel.kind.findData("controlnet"))
    assert not panel._base_row.isHidden() and panel.start_from.isHidden()
    assert panel.token.isHidden()  # the token is learned by the LoRA trainer only
    panel.base_dir.setText(str(tmp_path / "sd"))
    panel.out_dir.setText(str(tmp_path / "cn"))
    panel.size.setCurrentIndex(panel.size.findData(512))
    panel.steps.setValue(3)
    panel.batch.setValue(2)
    panel.lora_rank.setValue(4)
    handle = panel.train()
    qtbot.waitUntil(lambda: not handle.running, timeout=10_000)
    got = fake_sd_trainers["controlnet"]
    assert got["base"] == str(tmp_path / "sd") and got["out_dir"] == tmp_path / "cn"
    assert got["config"].size == 512 and got["config"].steps == 3
    assert got["config"].batch == 2 and got["config"].lora_rank == 4
    assert got["init_from"] is None and len(got["data"]) == 2  # real images only
    assert int(panel.plot.history.snapshot()[0][-1]) == 3
    assert panel.use_button.isEnabled()
    panel.use_in_generate()
    assert gen.backend_name == "controlnet" and gen.model_dir.text() == str(tmp_path / "sd")
    assert gen.sd_fields["controlnet_dir"].text() == str(tmp_path / "cn")
    assert gen.sd_fields["lora"].text() == str(tmp_path / "cn")  # the LoRA trained with it


def test_lora_training_from_the_dock(qtbot, fake_sd_trainers, tmp_path):
    window, panel, gen = panel_on(qtbot)
    (tmp_path / "sd").mkdir()
    (tmp_path / "cn").mkdir()
    panel.kind.setCurrentIndex(panel.kind.findData("lora"))
    assert not panel.token.isHidden() and panel.lora_rank.value() >= 1
    panel.base_dir.setText(str(tmp_path / "sd"))
    panel.cn_dir.setText(str(tmp_path / "cn"))
    panel.token.setText("<us>")
    panel.out_dir.setText(str(tmp_path / "lora"))
    panel.steps.setValue(2)
    handle = panel.train()
    qtbot.waitUntil(lambda: not handle.running, timeout=10_000)
    got = fake_sd_trainers["lora"]
    assert got["config"].token == "<us>" and got["controlnet_dir"] == str(tmp_path / "cn")
    panel.use_in_generate()
    assert gen.sd_fields["lora"].text() == str(tmp_path / "lora")
    assert gen.sd_fields["ti_token"].text() == "<us>"
    assert gen.sd_fields["ti_embedding"].text().endswith("learned_embeds.safetensors")


def test_a_missing_stable_diffusion_folder_is_one_sentence(qtbot, fake_sd_trainers, tmp_path):
    window, panel, _ = panel_on(qtbot)
    panel.kind.setCurrentIndex(panel.kind.findData("controlnet"))
    panel.out_dir.setText(str(tmp_path / "cn"))
    shown = []
    panel._show_error = shown.append
    assert panel.train() is None
    assert shown == ["Choose the Stable Diffusion folder to train for."]
    assert "controlnet" not in fake_sd_trainers
