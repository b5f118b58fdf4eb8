"""Train on several local GPUs from a program (the Train dock): torchrun in a subprocess.

``train_sdm_launched`` is a plain long task like ``train_sdm`` (progress callback, cancel token,
the same ``TrainResult``), but runs ``usgen train sdm --jsonl`` under torchrun with one process
per GPU. Rank 0 prints one JSON line per step; they become Progress reports and sample grids.
Cancel creates a stop file the ranks look for between steps (all of them agree on the step
through an all-reduce), so they write a checkpoint and end as after Ctrl+C; a signal to
torchrun would make it kill the workers before they save. A failure becomes the trainer's own
one-sentence error, read from its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import UsgenError
from usgen_desktop.synthesis.training.distributed import launch_command


class StopFileToken(CancelToken):
    """A cancel token that also reads as cancelled once ``path`` exists: how a parent process
    cancels a training run in torchrun's workers."""

    def __init__(self, path: str | Path | None) -> None:
        super().__init__()
        self.path = Path(path) if path else None

    @property
    def cancelled(self) -> bool:
        return super().cancelled or (self.path is not None and self.path.exists())


def train_sdm_launched(
    nproc: int,
    args: Sequence[str],
    out_dir: str | Path,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    on_sample: Callable[[int, Any], None] | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """Run ``usgen train sdm ARGS`` on ``nproc`` local processes; returns a ``TrainResult``.
    ``args`` are the sdm options (``--data``, ``--steps``...) without ``--out``."""
    from usgen_desktop.synthesis.training.sdm import TrainResult

    cancel = cancel or CancelToken()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="usgen-train-") as tmp:
        stop = Path(tmp) / "stop"
        log = Path(tmp) / "stderr.log"
        cmd = launch_command(nproc, ["train", "sdm", *args, "--out", str(out_dir), "--jsonl",
                                     "--quiet", "--stop-file", str(stop)])
        full_env = {**os.environ, **(env or {})}
        # the workers import this very copy of usgen_desktop, also from a source checkout
        root = str(Path(__file__).resolve().parents[3])
        full_env["PYTHONPATH"] = os.pathsep.join(
            x for x in (root, full_env.get("PYTHONPATH", "")) if x)
        full_env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; say it
        losses: list[float] = []
        step = total_steps = 0
        with open(log, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                    env=full_env, start_new_session=True)
            watcher = threading.Thread(target=_watch_cancel, args=(proc, cancel, stop),
                                       daemon=True)
            watcher.start()
            assert proc.stdout is not None
            for line in proc.stdout:
                rec = _parse(line)
                if rec is None:
                    continue
                step = int(rec.get("step") or 0)
                if rec.get("loss") is not None:
                    losses.append(float(rec["loss"]))
                total_steps = int(rec.get("steps") or 0)
                progress(Progress(step, total_steps, str(rec.get("message") or ""),
                                  {"loss": rec.get("loss"), "step": step, "sample": None}))
                if rec.get("sample") and on_sample is not None:
                    grid = _read_png(rec["sample"])
                    if grid is not None:
                        on_sample(step, grid)
            code = proc.wait()
        if code not in (0, 130):
            raise UsgenError(_failure(log.read_text(encoding="utf-8", errors="replace"),
                                      code, nproc))
        seconds = 0.0
        try:
            from usgen_desktop.synthesis.training.sdm import latest_checkpoint, load_training_state

            last = latest_checkpoint(out_dir)
            if last is not None:
                state = load_training_state(last)
                seconds = float(state.get("seconds", 0.0))
                step = int(state.get("step", step))
                losses = list(state.get("losses", losses))
        except (OSError, ValueError, KeyError):
            pass
        # a stopped run exits 0 under torchrun (any other code reads as a crash there)
        stopped = code == 130 or (cancel.cancelled and step < total_steps)
        return TrainResult(out_dir, step, losses, seconds, cancelled=stopped)


def _watch_cancel(proc: subprocess.Popen, cancel: CancelToken, stop: Path) -> None:
    while proc.poll() is None:
        if cancel.cancelled:
            stop.touch()
            return
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass


def _parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _read_png(path: str) -> Any:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _failure(stderr: str, code: int, nproc: int) -> str:
    """The trainer's own sentence (``usgen: error: ...``) when it printed one."""
    for line in reversed(stderr.splitlines()):
        if "usgen: error:" in line:
            return line.split("usgen: error:", 1)[1].strip()
    tail = stderr.strip().splitlines()[-1:] or [""]
    return (f"Training on {nproc} processes stopped with exit code {code} "
            f"({tail[0][:200] or 'no message'}).")
