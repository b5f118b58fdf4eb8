"""The Generate panel's Stable Diffusion recipe (seeds/002): ControlNet folder, LoRA, token and
embedding, prompt and strength reach the GenerationRequest and the provenance the manifest
writes, are saved with the project, and a prompt can be kept as the class's prompt in the
label schema."""

from __future__ import annotations

import pytest

from tests.gui import test_generate_panel as base
from tests.gui.test_generate_panel import lesion_doc, make_window, wait_done

pytestmark = pytest.mark.gui
fake_backend = base.fake_backend  # the fake backend fixture, registered under every name


@pytest.fixture
def setup(qtbot, fake_backend):
    from usgen_desktop.gui.panels import generate

    docs = [lesion_doc("case1", "benign", 0), lesion_doc("case2", "malignant", 1)]
    window = make_window(docs)
    qtbot.addWidget(window)
    panel = generate.install(window)
    window.show()
    panel.backend.setCurrentIndex(panel.backend.findData("speckle"))
    return window, panel, docs, fake_backend


def use_sd(panel):
    panel.backend.setCurrentIndex(panel.backend.findData("controlnet"))
    panel.model_dir.setText("")  # the fake backend stands in for Stable Diffusion


def test_sd_fields_show_only_for_the_sd_backend(qtbot, setup):
    _window, panel, _docs, _ = setup
    assert all(row.isHidden() for row in panel._sd_rows.values())
    use_sd(panel)
    assert not any(row.isHidden() for row in panel._sd_rows.values())
    assert not panel.strength.isHidden() and not panel.prompt.isHidden()
    panel.backend.setCurrentIndex(panel.backend.findData("sdm"))
    assert all(row.isHidden() for row in panel._sd_rows.values())


def test_sd_fields_reach_the_request_the_provenance_and_the_project(qtbot, setup, tmp_path):
    window, panel, _docs, fake = setup
    window.project.settings = {}
    use_sd(panel)
    values = {"controlnet_dir": str(tmp_path / "cn"), "lora": str(tmp_path / "lora"),
              "ti_token": "<us>", "ti_embedding": str(tmp_path / "emb.safetensors")}
    for key, value in values.items():
        panel.sd_fields[key].setText(value)
    panel.prompt.setText("ultrasound image of breast, <us>")
    panel.strength.setValue(0.45)
    panel.count.setValue(1)
    panel.generate()
    wait_done(qtbot, panel)
    req = fake["loaded"][-1]
    assert req.backend == "controlnet" and req.params == values
    assert req.strength == pytest.approx(0.45) and req.prompt == "ultrasound image of breast, <us>"
    prov = next(iter(panel.gallery.items.values())).result.provenance
    assert prov["params"] == values and prov["strength"] == pytest.approx(0.45)
    saved = window.project.settings["generate"]
    assert saved["lora"] == values["lora"] and saved["strength"] == pytest.approx(0.45)
    # an empty field is left out, so the backend takes its default (text-to-image)
    panel.sd_fields["controlnet_dir"].clear()
    panel.generate()
    wait_done(qtbot, panel)
    assert "controlnet_dir" not in fake["loaded"][-1].params

    # another panel on the same project shows what the project saved
    from usgen_desktop.gui.panels import generate

    other = make_window([lesion_doc()])
    qtbot.addWidget(other)
    other.project.settings = {"generate": dict(saved)}
    panel2 = generate.install(other)
    assert panel2.sd_fields["lora"].text() == values["lora"]
    assert panel2.sd_fields["ti_token"].text() == "<us>"
    assert panel2.strength.value() == pytest.approx(0.45)
    assert panel2.prompt.text() == "ultrasound image of breast, <us>"


def test_keep_saves_the_prompt_for_the_class_in_the_schema(qtbot, setup):
    window, panel, docs, fake = setup
    use_sd(panel)
    panel.klass.setCurrentIndex(panel.klass.findData("malignant"))
    assert "malignant" in panel.prompt.placeholderText()
    panel.prompt.setText("ultrasound image of an irregular spiculated breast mass")
    panel.keep_prompt.click()
    assert window.project.schema.prompts == {
        "malignant": "ultrasound image of an irregular spiculated breast mass"}
    assert panel.prompt.text() == ""  # the field is free; the hint shows the kept prompt
    assert panel.prompt.placeholderText() == "ultrasound image of an irregular spiculated breast mass"
    panel.count.setValue(1)
    panel.generate()
    wait_done(qtbot, panel)
    req = fake["loaded"][-1]
    assert req.prompt is None and req.schema.prompt_for("malignant").endswith("breast mass")
    panel.klass.setCurrentIndex(0)  # each image's own class: nothing to keep the prompt for
    assert not panel.keep_prompt.isEnabled()
