"""`usgen train sdm` end to end on a tiny BUSI-like folder: a model folder that generates,
resume to a longer run, one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

from tests.conftest import lesion_pair

REPO = Path(__file__).resolve().parents[2]
TINY = ["--size", "32", "--batch", "2", "--blocks", "8,16", "--layers-per-block", "1",
        "--sample-every", "0", "--checkpoint-every", "2", "--device", "cpu"]


def _usgen(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "USGEN_DATA_DIR": str(env_dir / "data"),
           "USGEN_CONFIG_DIR": str(env_dir / "cfg"), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "usgen_desktop.cli.main", "train", *args],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )


def _dataset(root: Path) -> None:
    for klass in ("benign", "malignant"):
        for i in range(2):
            img, mask = lesion_pair(48, 64, seed=i)
            (root / klass / "images").mkdir(parents=True, exist_ok=True)
            (root / klass / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / klass / "images" / f"{klass} ({i}).png"), img)
            cv2.imwrite(str(root / klass / "masks" / f"{klass} ({i})_mask.png"), mask)


def test_train_sdm_then_resume_then_generate(tmp_path):
    _dataset(tmp_path / "busi")
    out = tmp_path / "model"
    r = _usgen("sdm", "--data", str(tmp_path / "busi"), "--out", str(out), "--steps", "2",
               *TINY, env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Trained 2 steps" in r.stdout
    meta = json.loads((out / "usgen_model.json").read_text())
    assert meta["kind"] == "sdm" and meta["size"] == [32, 32]
    assert "benign" in meta["classes"] and "malignant" in meta["classes"]
    # the same folder again without --resume is refused in one line
    again = _usgen("sdm", "--data", str(tmp_path / "busi"), "--out", str(out), "--steps", "4",
                   *TINY, env_dir=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "resume" in again.stderr
    more = _usgen("sdm", "--data", str(tmp_path / "busi"), "--out", str(out), "--steps", "4",
                  "--resume", *TINY, env_dir=tmp_path)
    assert more.returncode == 0, more.stderr
    assert json.loads((out / "usgen_model.json").read_text())["training"]["steps_done"] == 4

    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.synthesis.request import GenerationRequest, run

    _, mask = lesion_pair(48, 64)
    res = run(GenerationRequest([LabelMap((mask > 0).astype("uint8"))], load_preset("busi"),
                                backend="sdm", model_dir=str(out), classes=["benign"], steps=2,
                                device="cpu"))
    assert res[0].image.shape == (48, 64)

    # fine-tuning: a new run starts from this model and takes its size and shape (no TINY flags)
    tuned = tmp_path / "tuned"
    ft = _usgen("sdm", "--data", str(tmp_path / "busi"), "--out", str(tuned), "--steps", "1",
                "--init-from", str(out), "--batch", "2", "--sample-every", "0", "--device",
                "cpu", env_dir=tmp_path)
    assert ft.returncode == 0, ft.stderr
    meta = json.loads((tuned / "usgen_model.json").read_text())
    assert meta["size"] == [32, 32] and meta["training"]["init_from"] == "model"


def test_bad_input_is_one_line(tmp_path):
    r = _usgen("sdm", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"),
               *TINY, env_dir=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "does not exist" in r.stderr
    _dataset(tmp_path / "busi")
    r = _usgen("sdm", "--data", str(tmp_path / "busi"), "--out", str(tmp_path / "m"),
               "--size", "33", "--blocks", "8,16", "--steps", "1", env_dir=tmp_path)
    assert r.returncode == 2 and "--size" in r.stderr
    r = _usgen("sdm", "--data", str(tmp_path / "busi"), "--out", str(tmp_path / "m"),
               "--init-from", str(tmp_path / "busi"), env_dir=tmp_path)
    assert r.returncode == 2 and "not an sdm model folder" in r.stderr
    r = _usgen(env_dir=tmp_path)
    assert r.returncode == 2 and "sdm" in r.stdout


def test_train_lora_cli_on_tiny_models(tmp_path):
    from tests.unit.test_controlnet import build_tiny_sd
    from usgen_desktop.cli.main import main

    sd, cn = build_tiny_sd(tmp_path / "models")
    _dataset(tmp_path / "busi")
    rc = main(["train", "lora", "--base", str(sd), "--controlnet", str(cn), "--data",
               str(tmp_path / "busi"), "--out", str(tmp_path / "lora"), "--token", "<us>",
               "--steps", "2", "--size", "32", "--rank", "2", "--device", "cpu", "-q"])
    assert rc == 0
    meta = json.loads((tmp_path / "lora" / "usgen_lora.json").read_text())
    assert meta["steps_done"] == 2 and meta["config"]["token"] == "<us>"
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert main(["train", "lora", "--base", str(tmp_path / "nope"), "--data",
                 str(tmp_path / "busi"), "--out", str(tmp_path / "x"), "-q"]) == 2


def test_train_refiner_into_a_model_then_generate_records_it(tmp_path):
    _dataset(tmp_path / "busi")
    model = tmp_path / "model"
    r = _usgen("sdm", "--data", str(tmp_path / "busi"), "--out", str(model), "--steps", "1",
               *TINY, env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    # a plain folder of images, no labels, teaches the refiner
    plain = tmp_path / "scans"
    plain.mkdir()
    for i in range(3):
        cv2.imwrite(str(plain / f"scan{i}.png"), lesion_pair(48, 64, seed=i)[0])
    (plain / "broken.png").write_bytes(b"not a png")
    ref = tmp_path / "ref"
    r = _usgen("refiner", "--data", str(plain), "--out", str(ref), "--steps", "2", "--batch",
               "2", "--patch", "32", "--base-size", "32", "--device", "cpu", "--into",
               str(model), env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert json.loads((model / "refiner" / "usgen_model.json").read_text())["kind"] == "sdm-refiner"
    assert not (model / "refiner" / "checkpoints").exists()
    more = _usgen("refiner", "--data", str(plain), "--out", str(ref), "--steps", "3",
                  "--batch", "2", "--patch", "32", "--base-size", "32", "--device", "cpu",
                  "--resume", env_dir=tmp_path)
    assert more.returncode == 0, more.stderr
    assert json.loads((ref / "usgen_model.json").read_text())["training"]["steps_done"] == 3

    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.synthesis.request import GenerationRequest, run

    _, mask = lesion_pair(48, 64)
    res = run(GenerationRequest([LabelMap((mask > 0).astype("uint8"))], load_preset("busi"),
                                backend="sdm", model_dir=str(model), classes=["benign"], steps=2,
                                device="cpu"))
    assert res[0].image.shape == (48, 64) and len(res[0].provenance["refiner_hash"]) == 16
    bad = _usgen("refiner", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"),
                 env_dir=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_train_controlnet_cli_then_resume_then_generate(tmp_path, capsys):
    from tests.unit.test_controlnet import build_tiny_sd
    from usgen_desktop.cli.main import main

    sd, _ = build_tiny_sd(tmp_path / "models")
    _dataset(tmp_path / "busi")
    out = tmp_path / "cn"
    args = ["train", "controlnet", "--base", str(sd), "--data", str(tmp_path / "busi"),
            "--out", str(out), "--size", "32", "--lora-rank", "2", "--checkpoint-every", "1",
            "--device", "cpu", "-q"]
    assert main([*args, "--steps", "1"]) == 0
    meta = json.loads((out / "usgen_controlnet.json").read_text())
    assert meta["kind"] == "controlnet" and meta["steps_done"] == 1
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert main([*args, "--steps", "2"]) == 2  # the folder holds a run: resume or elsewhere
    assert "resume" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--resume"]) == 0
    assert json.loads((out / "usgen_controlnet.json").read_text())["steps_done"] == 2
    # the trained ControlNet and its LoRA drive `usgen generate`
    rc = main(["generate", "--no-progress", "--backend", "controlnet", "--model", str(sd),
               "--masks", str(tmp_path / "busi"), "--steps", "2", "--device", "cpu",
               "--param", f"controlnet_dir={out}", "--param", f"lora={out}",
               "--param", "resolution=32", "--strength", "0", "--out", str(tmp_path / "gen")])
    assert rc == 0
    rec = json.loads((tmp_path / "gen" / "manifest.jsonl").read_text().splitlines()[0])
    assert rec["provenance"]["mode"] == "controlnet"
    assert rec["provenance"]["params"]["controlnet_dir"] == str(out)
    assert main(["train", "controlnet", "--base", str(tmp_path / "nope"), "--data",
                 str(tmp_path / "busi"), "--out", str(tmp_path / "x"), "-q"]) == 2
