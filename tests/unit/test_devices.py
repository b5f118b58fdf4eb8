"""Device choice, CPU-seeded noise and out-of-memory as a user error (no GPU needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from usgen_desktop.errors import OutOfMemoryError, UsgenError
from usgen_desktop.synthesis import devices


@pytest.fixture
def fake_hw(monkeypatch):
    """Pretend which accelerators exist."""
    state = {"cuda": False, "mps": False}
    monkeypatch.setattr(devices, "_cuda_available", lambda: state["cuda"])
    monkeypatch.setattr(devices, "_mps_available", lambda: state["mps"])
    return state


def test_auto_prefers_cuda_then_mps_then_cpu(fake_hw):
    assert devices.pick_device() == "cpu"
    fake_hw["mps"] = True
    assert devices.pick_device("auto") == "mps"
    fake_hw["cuda"] = True
    assert devices.pick_device("auto") == "cuda"
    assert devices.available_devices() == ["cuda", "mps", "cpu"]


def test_explicit_choice_is_honoured_or_refused_in_one_sentence(fake_hw):
    fake_hw["cuda"] = True
    assert devices.pick_device("cpu") == "cpu"
    assert devices.pick_device("CUDA") == "cuda"
    with pytest.raises(UsgenError, match="MPS is not available"):
        devices.pick_device("mps")
    fake_hw["cuda"] = False
    with pytest.raises(UsgenError, match="No CUDA GPU") as info:
        devices.pick_device("cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(UsgenError, match="Unknown device 'tpu'"):
        devices.pick_device("tpu")


def test_cpu_generator_gives_the_same_noise_for_a_seed():
    torch = pytest.importorskip("torch")
    a = torch.randn(4, 8, generator=devices.cpu_generator(5))
    b = torch.randn(4, 8, generator=devices.cpu_generator(5))
    c = torch.randn(4, 8, generator=devices.cpu_generator(6))
    assert devices.cpu_generator(5).device.type == "cpu"
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_out_of_memory_is_recognised_and_becomes_advice():
    assert devices.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert devices.is_oom(MemoryError())
    assert not devices.is_oom(RuntimeError("shape mismatch"))
    with pytest.raises(OutOfMemoryError, match="smaller batch or the offload mode") as info:
        with devices.oom_as_user_error("cuda"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "\n" not in str(info.value) and "GPU" in str(info.value)
    with pytest.raises(ValueError):  # other errors pass through untouched
        with devices.oom_as_user_error():
            raise ValueError("not memory")


def test_torch_oom_type_is_recognised():
    torch = pytest.importorskip("torch")
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is None:
        pytest.skip("this torch has no OutOfMemoryError type")
    assert devices.is_oom(oom("x"))


def test_importing_devices_does_not_import_torch():
    code = ("import sys; import usgen_desktop.synthesis.devices; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
