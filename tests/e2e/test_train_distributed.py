"""`usgen train sdm` under torchrun with 2 CPU processes (gloo): the same global batch makes the
same run as one process (loss curve and weights), only rank 0 writes, and a 2-process checkpoint
resumes on 1 process to the weights of the run never split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_train import _dataset

REPO = Path(__file__).resolve().parents[2]
TINY = ["--size", "32", "--batch", "4", "--blocks", "8,16", "--layers-per-block", "1",
        "--sample-every", "0", "--checkpoint-every", "2", "--device", "cpu", "--lr", "1e-3",
        "--warmup", "1"]


def _env(env_dir: Path) -> dict[str, str]:
    return {"USGEN_DATA_DIR": str(env_dir / "data"), "USGEN_CONFIG_DIR": str(env_dir / "cfg"),
            "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], env_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **_env(env_dir)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def _train(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "usgen_desktop.cli.main", "train", "sdm", *args], env_dir)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _gap(a: dict, b: dict, start: dict) -> float:
    """How far apart two weight sets are, as a fraction of how far training moved them (from
    ``start``): the order of float sums differs between one process and
    DDP's two half-batch gradients, and Adam's first steps (about lr * sign(gradient)) turn a
    near-zero gradient's rounding into a full step, so single elements may differ; the weights
    as a whole must not."""
    import torch

    diff = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a))
    ref = {k: a[k] - start[k] for k in a}
    scale = torch.sqrt(sum((ref[k] ** 2).sum() for k in ref))
    assert float(scale) > 0
    return float(diff / scale)


def _state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())


def test_two_processes_match_one_and_resume_on_one(tmp_path):
    from usgen_desktop.synthesis.training.launch import train_sdm_launched

    _dataset(tmp_path / "busi")
    data = ["--data", str(tmp_path / "busi")]
    one = tmp_path / "one"
    r = _train(*data, "--out", str(one), "--steps", "4", "--quiet", *TINY, env_dir=tmp_path)
    assert r.returncode == 0, r.stderr

    two = tmp_path / "two"
    seen = []
    # torchrun in a subprocess, as the Train dock starts it for "all GPUs"
    res = train_sdm_launched(2, [*data, "--steps", "2", *TINY], two, progress=seen.append,
                             env=_env(tmp_path))
    assert res.step == 2 and not res.cancelled
    # rank 0 alone reports: one JSON line per step (plus the start), each with the global loss
    assert [p.done for p in seen] == [0, 1, 2]
    assert [p.preview["loss"] for p in seen[1:]] == pytest.approx(res.losses)
    ck1 = one / "checkpoints" / "step_0000002"
    ck2 = two / "checkpoints" / "step_0000002"
    info = _state(ck2)["training_info"]
    assert info["processes"] == 2 and info["batch_per_process"] == 2 and info["batch"] == 4
    # the same global batch: the same losses and, up to the order of float sums, weights
    assert _state(ck2)["losses"] == pytest.approx(_state(ck1)["losses"], rel=1e-4)
    w1, w2 = _weights(ck1), _weights(ck2)
    assert set(w1) == set(w2)
    # (scale: how far two more steps of the one-process run move its weights; measured 0.6%)
    assert _gap(w1, w2, _weights(one / "checkpoints" / "step_0000004")) < 0.1

    # the 2-process checkpoint continues on one process to the unsplit run's step 4
    r = _train(*data, "--out", str(two), "--steps", "4", "--resume", "--quiet", *TINY,
               env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    s1, s2 = _state(one / "checkpoints" / "step_0000004"), _state(two / "checkpoints" /
                                                                  "step_0000004")
    assert s2["step"] == 4 and s2["losses"] == pytest.approx(s1["losses"], rel=1e-4)
    w1, w2 = (_weights(one / "checkpoints" / "step_0000004"),
              _weights(two / "checkpoints" / "step_0000004"))
    assert _gap(w1, w2, _weights(ck1)) < 0.1  # measured 1.7%
    assert (two / "usgen_model.json").is_file()


def test_batch_that_does_not_split_is_one_sentence(tmp_path):
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.synthesis.training.distributed import Dist, shard

    assert shard(Dist(1, 2), 8) == slice(4, 8)
    assert shard(Dist(), 8) == slice(0, 8)
    with pytest.raises(UsgenError, match="split evenly over 3 processes"):
        shard(Dist(0, 3), 8)


def test_cancel_stops_every_rank_with_a_checkpoint(tmp_path):
    """Cancel reaches the ranks through a stop file; they agree on the step (an all-reduce),
    write a checkpoint from rank 0 and end like Ctrl+C."""
    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.synthesis.training.launch import train_sdm_launched
    from usgen_desktop.synthesis.training.sdm import latest_checkpoint

    _dataset(tmp_path / "busi")
    cancel = CancelToken()

    def stop_after_2(p):
        if p.done >= 2:
            cancel.cancel()

    out = tmp_path / "run"
    args = ["--data", str(tmp_path / "busi"), "--steps", "500", *TINY]
    res = train_sdm_launched(2, args, out, progress=stop_after_2, cancel=cancel,
                             env=_env(tmp_path))
    assert res.cancelled and 2 <= res.step < 500
    assert _state(latest_checkpoint(out))["step"] == res.step
    assert (out / "usgen_model.json").is_file()


def test_a_failed_launch_reads_as_the_trainers_sentence():
    from usgen_desktop.synthesis.training.launch import _failure

    log = ("[rank1]: usgen: error: The batch of 3 does not split evenly over 2 processes.\n"
           "E1205 torch/distributed/elastic/multiprocessing/api.py failed (exitcode: 2)\n"
           "==========\n")
    assert _failure(log, 1, 2) == "The batch of 3 does not split evenly over 2 processes."
    assert "exit code 1" in _failure("Segmentation fault\n", 1, 2)


@pytest.mark.slow
def test_accelerate_launch_trains_like_torchrun(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (it runs torchrun's machinery; with
    --device cpu the processes use gloo) gives the one-process run's losses."""
    pytest.importorskip("accelerate")
    _dataset(tmp_path / "busi")
    data = ["--data", str(tmp_path / "busi"), "--steps", "2", "--quiet", *TINY]
    r = _train(*data, "--out", str(tmp_path / "one"), env_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "usgen_desktop.cli.main", "train", "sdm", *data,
              "--out", str(tmp_path / "acc")], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    a = _state(tmp_path / "acc" / "checkpoints" / "step_0000002")
    b = _state(tmp_path / "one" / "checkpoints" / "step_0000002")
    assert a["training_info"]["processes"] == 2
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-4)


@pytest.mark.slow  # ~3 min on the busy 2-core VM (tiny SD + transformers in 3 processes)
def test_lora_on_two_processes_matches_one(tmp_path):
    """`usgen train lora` (LoRA + a learned token) under torchrun with 2 gloo processes: the
    same losses as one process, the LoRA and token weights close to its, one writer."""
    import torch
    from safetensors.torch import load_file

    from tests.unit.test_controlnet import build_tiny_sd
    from usgen_desktop.synthesis.training.distributed import launch_command

    sd, cn = build_tiny_sd(tmp_path / "sd")
    _dataset(tmp_path / "busi")
    args = ["train", "lora", "--base", str(sd), "--controlnet", str(cn), "--data",
            str(tmp_path / "busi"), "--steps", "2", "--batch", "4", "--size", "32", "--rank", "2",
            "--lr", "1e-2", "--token", "<us>", "--device", "cpu", "--quiet"]
    r = _run([sys.executable, "-m", "usgen_desktop.cli.main", *args, "--out",
              str(tmp_path / "one")], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(launch_command(2, [*args, "--out", str(tmp_path / "two")]), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("Trained 2 LoRA steps") == 1  # rank 0 alone reports
    m1, m2 = (json.loads((tmp_path / d / "usgen_lora.json").read_text()) for d in ("one", "two"))
    assert m2["final_loss"] == pytest.approx(m1["final_loss"], rel=1e-4)
    for name in ("pytorch_lora_weights.safetensors", "learned_embeds.safetensors"):
        a, b = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert set(a) == set(b)
        diff = float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))
        size = float(torch.sqrt(sum((a[k] ** 2).sum() for k in a)))
        assert diff < 1e-5 * size  # measured 6e-8 and 3e-9 of the norms
