"""Data-parallel training over ``torchrun`` / ``accelerate launch``, reusable by every trainer.

A trainer written for one process runs on many by calling these helpers; it needs no launcher
of its own. Both launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init` reads them and joins the process group (nccl on CUDA, gloo on a
CPU), and without them everything here is a no-op on one process, so the same code path serves
a laptop, one GPU, eight GPUs and several nodes.

Determinism across process counts is the trainer's job, with one rule these helpers support:
every rank draws the *global* batch's random choices from the same streams (same seed, same
state), then :func:`shard` gives each rank its contiguous slice. The global batch is then the
same whatever the world size, and so is a checkpoint's random state, so a run resumed on a
different number of processes continues exactly (DistributedDataParallel averages the gradients
of equal slices, which is the gradient of the global mean loss).

:func:`launch_command` builds the torchrun command line the Train dock starts in a subprocess
to use all local GPUs. torch is imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from usgen_desktop.errors import UsgenError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group

    @property
    def is_main(self) -> bool:
        """Only the main process writes (checkpoints, samples, logs, the model folder)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True when a launcher (torchrun, accelerate launch, Slurm via torchrun) started us with
    more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init(device_pref: str = "auto") -> tuple[Dist, str]:
    """Join the process group when launched with several processes; returns (Dist, device).

    ``device_pref`` as for :func:`pick_device`; on CUDA each process takes GPU ``LOCAL_RANK``
    (a launcher starts one process per GPU). Idempotent: a second call returns the same."""
    from usgen_desktop.synthesis.devices import pick_device

    device = pick_device(device_pref)
    if not launched():
        return Dist(), device
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise UsgenError(
                f"Process {rank} was told to use GPU {local}, but this node has "
                f"{torch.cuda.device_count()}; start at most one process per GPU."
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    elif device == "mps":
        raise UsgenError("Training on several processes needs CUDA GPUs or the CPU, not mps.")
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(rank, world, local, backend), device


def shutdown() -> None:
    """Leave the process group (no-op on one process)."""
    if launched():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.active:
        import torch.distributed as dist

        dist.barrier()


def mean(d: Dist, value: float, device: str = "cpu") -> float:
    """The mean of ``value`` over all processes (e.g. the loss of the global batch)."""
    if not d.active:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64,
                     device=device if d.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / d.world


def any_true(d: Dist, flag: bool, device: str = "cpu") -> bool:
    """True on every process when ``flag`` is true on any: a cancel (Ctrl+C reaches the ranks
    at different moments) must stop them all at the same step, or the others hang in the next
    all-reduce."""
    if not d.active:
        return bool(flag)
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32,
                     device=device if d.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(d: Dist, params: Any) -> None:
    """Average the gradients of ``params`` over all processes, in place (no-op on one). For
    trainers whose trainable weights are few or spread over several modules (a LoRA and a
    token embedding), where wrapping each module in DistributedDataParallel is more trouble
    than one all-reduce per tensor after ``backward()``."""
    if not d.active:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(d.world)


def shard(d: Dist, global_batch: int) -> slice:
    """This rank's contiguous slice of a global batch (like DistributedSampler, but over one
    batch drawn identically on every rank, so the union of the slices is the global batch).
    UsgenError when the batch does not split evenly: uneven slices would weight examples
    unequally in the averaged gradient."""
    if global_batch % d.world:
        raise UsgenError(
            f"The batch of {global_batch} does not split evenly over {d.world} processes; "
            f"choose a multiple of {d.world}."
        )
    per = global_batch // d.world
    return slice(d.rank * per, (d.rank + 1) * per)


def wrap(d: Dist, module: Any, device: str) -> Any:
    """``module`` in DistributedDataParallel when there are several processes, else itself.
    DDP broadcasts rank 0's weights, so every rank starts from the same ones."""
    if not d.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.startswith("cuda"):
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        return DDP(module, device_ids=[idx], output_device=idx)
    return DDP(module)


def cuda_count() -> int:
    """Local CUDA GPUs (0 without CUDA or with a broken driver)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means "no GPU", not a crash
        return 0


def local_gpu_count() -> int:
    """Local CUDA GPUs without importing torch when it is not loaded yet (the GUI asks while
    building a panel): torch's count when torch is in memory, else the NVIDIA driver's list on
    Linux, honouring CUDA_VISIBLE_DEVICES; 0 when unknown (the several-GPU choice then stays
    hidden, and one process trains as before)."""
    if "torch" in sys.modules:
        return cuda_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([x for x in visible.split(",") if x.strip() and x.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def launch_command(nproc: int, args: Sequence[str], python: str | None = None) -> list[str]:
    """The command line that runs ``usgen ARGS`` on ``nproc`` local processes under torchrun
    (``python -m torch.distributed.run``, which is torchrun without relying on PATH)."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={int(nproc)}", "-m", "usgen_desktop.cli.main", *args]
