"""Which device generation runs on, seeded CPU noise, and out-of-memory as a user error.

torch is imported inside the functions only: importing this module must stay free so the GUI
and ``usgen --help`` start fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from usgen_desktop.errors import OutOfMemoryError, UsgenError

KNOWN = ("auto", "cpu", "cuda", "mps")
OOM_ADVICE = "try a smaller batch or the offload mode"


def _cuda_available() -> bool:
    import torch

    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver means "no CUDA", not a crash
        return False


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    try:
        return bool(backend is not None and backend.is_available())
    except Exception:  # noqa: BLE001
        return False


def available_devices() -> list[str]:
    """Devices this computer can generate on, best first ("cpu" always last)."""
    found = []
    if _cuda_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    return [*found, "cpu"]


def pick_device(preference: str = "auto") -> str:
    """The device to use: ``auto`` tries CUDA, then Apple MPS, then the CPU; an explicit
    ``cpu``/``cuda``/``cuda:N``/``mps`` is honoured or refused with one sentence."""
    pref = (preference or "auto").strip().lower()
    base = pref.split(":", 1)[0]
    if base not in KNOWN:
        raise UsgenError(f"Unknown device '{preference}' (choose one of {', '.join(KNOWN)}).")
    if pref == "cpu":
        return "cpu"
    if pref == "auto":
        return available_devices()[0]
    if base == "cuda":
        if not _cuda_available():
            raise UsgenError("No CUDA GPU is available on this computer; choose 'cpu' or 'auto'.")
        if ":" in pref:
            import torch

            try:
                index = int(pref.split(":", 1)[1])
            except ValueError:
                raise UsgenError(f"Unknown device '{preference}' (use cuda or cuda:N).") from None
            if not 0 <= index < torch.cuda.device_count():
                raise UsgenError(
                    f"There is no GPU number {index} (this computer has "
                    f"{torch.cuda.device_count()})."
                )
        return pref
    if not _mps_available():
        raise UsgenError("Apple MPS is not available on this computer; choose 'cpu' or 'auto'.")
    return "mps"


def cpu_generator(seed: int) -> Any:
    """A ``torch.Generator`` on the CPU: draw noise with it and move the tensor to the device,
    so one seed gives the same starting noise on a CPU, a CUDA GPU or a Mac."""
    import torch

    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return gen


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory (CUDA, MPS or a CPU allocation failure)."""
    if isinstance(exc, OutOfMemoryError | MemoryError):
        return True
    try:
        import torch

        oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
        if oom_type is not None and isinstance(exc, oom_type):
            return True
    except ImportError:
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "mps backend out of memory" in text
    )


def oom_error(exc: BaseException | None = None, device: str = "cuda") -> OutOfMemoryError:
    """The user-facing error for an out-of-memory on ``device`` (frees the CUDA cache first,
    so the app can carry on with a smaller batch)."""
    empty_cache()
    base = (device or "").split(":", 1)[0]
    where = {"cpu": "The computer", "mps": "The Mac's GPU"}.get(base, "The GPU")
    return OutOfMemoryError(f"{where} ran out of memory; {OOM_ADVICE}.")


def empty_cache() -> None:
    """Give cached GPU memory back after a failure (no-op without torch or a GPU)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - cleanup must never raise over the real error
        pass


@contextmanager
def oom_as_user_error(device: str = "cuda") -> Iterator[None]:
    """Turn an out-of-memory inside the block into ``OutOfMemoryError`` with advice."""
    try:
        yield
    except UsgenError:
        raise
    except Exception as exc:
        if is_oom(exc):
            raise oom_error(exc, device) from exc
        raise


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """How many torch threads a CPU job should use: the cores nobody else is busy on.

    torch takes every core by default; beside another busy job that oversubscribes the machine
    and each thread waits on the others (on a 2-core machine next to one training run, 4 images
    took 91 s with 2 threads and 9.3 s with 1). The 1-minute load average says how many cores
    are busy; a quiet machine gets all its cores."""
    import os

    cores = cpu_cores() if cores is None else max(1, int(cores))
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows has no load average: take all the cores
            load = 0.0
    free = cores - max(0.0, float(load))
    return max(1, min(cores, int(free + 0.5)))


def set_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads (None: :func:`auto_threads`); returns the number set."""
    import torch

    n = int(threads) if threads else auto_threads()
    if n < 1:
        raise UsgenError("The number of CPU threads must be at least 1.")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
