"""`usgen generate --ray [ADDRESS]`: the shards of a generation run as Ray tasks.

Ray is an optional extra (``pip install ".[ray]"``); it is imported only here, when ``--ray``
is given. Each of ``--shards N`` shards (default: one per GPU of the cluster, else one per CPU)
is one task running the ordinary ``generate_dataset`` for ``--shard I/N`` into the one output
folder, with one GPU where the cluster has GPUs (Ray then gives the task its own
``CUDA_VISIBLE_DEVICES``) and one CPU otherwise. The driver shows one progress bar counting the
finished pairs in the folder's manifest, resubmits a shard whose task failed (a lost node, a
crashed process: the shard resumes where it stopped) up to ``RETRIES`` times, and ends with
``usgen merge``'s check and sorted manifest, so the folder equals the unsharded run's.

The folder must be reachable from every node (a shared file system), as for Slurm. Errors a
user can cause (a bad model folder) are returned by the task as one sentence and are not
retried: every attempt would fail the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

RETRIES = 2
LOCAL = "local"  # --ray without an address: start a Ray instance on this computer
FAIL_ENV = "USGEN_RAY_FAIL_FIRST"  # tests: shard I's first attempt raises (shows the retry)


def _import_ray() -> Any:
    from usgen_desktop.errors import UsgenError

    try:
        import ray
    except ImportError:
        raise UsgenError(
            "--ray needs Ray, which is not installed; install it with "
            "pip install \"usgen-desktop[ray]\" (or pip install ray)."
        ) from None
    return ray


def shard_task(masks: str, out: str, args: argparse.Namespace, shard: tuple[int, int],
               size: tuple[int, int] | None, params: dict[str, Any], attempt: int
               ) -> tuple[int, str | None]:
    """One shard in a Ray worker: (pairs written, None) or (0, the user error's sentence)."""
    from usgen_desktop.cli.generate_cmd import generate_dataset
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.offline import enforce_offline

    enforce_offline()
    if attempt == 0 and os.environ.get(FAIL_ENV) == str(shard[0]):
        raise RuntimeError(f"{FAIL_ENV}: shard {shard[0]} fails on its first attempt")
    try:
        return generate_dataset(Path(masks), Path(out), args, shard, size, params), None
    except UsgenError as exc:
        return 0, str(exc)


def _count_done(target: Path, total: int) -> int:
    from usgen_desktop.cli.generate_cmd import MANIFEST
    from usgen_desktop.io.jsonl import read_jsonl

    items = set()
    for rec in read_jsonl(target / MANIFEST):
        try:
            items.add(int(rec["item"]))
        except (KeyError, TypeError, ValueError):
            continue
    return len([i for i in items if 0 <= i < total])


def run_ray(sources: list[tuple[Path, Path]], args: argparse.Namespace,
            size: tuple[int, int] | None, params: dict[str, Any]) -> int:
    """Generate every dataset of ``sources`` [(masks, out)] as Ray tasks; returns 0."""
    ray = _import_ray()
    from usgen_desktop.cli.merge_cmd import merge_runs
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.export.layouts import dataset_folder
    from usgen_desktop.io import open_dataset

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry: USGen is offline
        address = None if args.ray == LOCAL else args.ray
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsgenError(f"Could not reach the Ray cluster at '{args.ray}' ({exc}).") from exc
        started = True
    try:
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        shards = args.shards or gpus or cpus
        opts = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
        task = ray.remote(max_retries=RETRIES)(shard_task).options(**opts)
        worker_args = argparse.Namespace(**{**vars(args), "no_progress": True})
        for masks, out in sources:
            found = open_dataset(masks)
            maps = sum(1 for d in found.documents if d.labels is not None)
            total = maps * args.per_mask
            target = dataset_folder(out, args.format, "USGenSynthetic", 501)
            _run_shards(ray, task, masks, out, target, worker_args, shards, size, params,
                        total, show_bar=not args.no_progress)
            report = merge_runs([target])
            print(f"usgen: {report.present} of {report.total} pairs in '{target}' "
                  f"({shards} Ray shards, {'one GPU' if gpus else 'one CPU'} each).",
                  file=sys.stderr)
    finally:
        if started:
            ray.shutdown()
    return 0


def _run_shards(ray: Any, task: Any, masks: Path, out: Path, target: Path,
                args: argparse.Namespace, shards: int, size: tuple[int, int] | None,
                params: dict[str, Any], total: int, show_bar: bool) -> None:
    from usgen_desktop.errors import UsgenError

    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"generate {masks.name} ({shards} Ray shards)",
                   unit="pair", file=sys.stderr, dynamic_ncols=True)
    attempts = {i: 0 for i in range(1, shards + 1)}
    pending = {task.remote(str(masks), str(out), args, (i, shards), size, params, 0): i
               for i in attempts}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if bar is not None:
                bar.n = _count_done(target, total)
                bar.refresh()
            for ref in ready:
                i = pending.pop(ref)
                try:
                    _, user_error = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker, a crash: retry
                    attempts[i] += 1
                    if attempts[i] > RETRIES:
                        raise UsgenError(
                            f"Shard {i}/{shards} failed {attempts[i]} times "
                            f"({_first_line(exc)}); the pairs made so far are kept, and the "
                            "same command resumes."
                        ) from None
                    print(f"\nusgen: shard {i}/{shards} failed ({_first_line(exc)}); "
                          f"retrying ({attempts[i]} of {RETRIES}).", file=sys.stderr)
                    ref = task.remote(str(masks), str(out), args, (i, shards), size, params,
                                      attempts[i])
                    pending[ref] = i
                    continue
                if user_error:
                    raise UsgenError(user_error)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if bar is not None:
            bar.n = _count_done(target, total)
            bar.close()


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return (text[-1] if text else type(cause).__name__)[:200]
