"""`usgen generate --ray` on a local Ray instance with 2 CPUs: three shards as Ray tasks (one
made to fail once, to show the retry) give a folder byte-identical to the unsharded run.
Skipped when Ray is not installed (it is an optional extra; `.[dev]` installs it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.test_cli_generate import _dataset, _files, _gen
from tests.e2e.test_cli_merge import _records

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from usgen_desktop.cli.generate_ray import FAIL_ENV

    saved = {k: os.environ.get(k) for k in (FAIL_ENV, "PYTHONPATH", "RAY_USAGE_STATS_ENABLED")}
    os.environ[FAIL_ENV] = "2"  # the workers inherit it: shard 2's first attempt raises
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_ray_shards_equal_the_unsharded_run(tmp_path, local_ray, capsys):
    ds = _dataset(tmp_path / "ds")
    whole, out = tmp_path / "whole", tmp_path / "ray"
    args = ["--masks", str(ds), "--per-mask", "2", "--seed", "3"]
    assert _gen(*args, "--out", str(whole)) == 0
    capsys.readouterr()
    assert _gen(*args, "--out", str(out), "--ray", "--shards", "3") == 0
    err = capsys.readouterr().err
    assert "shard 2/3 failed" in err and "retrying (1 of 2)" in err
    assert "6 of 6 pairs" in err
    assert _files(out) == _files(whole)
    assert _records(out) == _records(whole)  # merged: sorted by item, like the unsharded run
    # a user error is one sentence, not retried
    assert _gen(*args, "--out", str(tmp_path / "x"), "--ray", "--backend", "sdm", "--model",
                str(tmp_path / "nope")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _gen(*args, "--out", str(tmp_path / "y"), "--ray", "--shard", "1/2") == 2


def test_without_ray_installed_is_one_sentence(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    ds = _dataset(tmp_path / "ds", n=1)
    assert _gen("--masks", str(ds), "--out", str(tmp_path / "o"), "--ray") == 2
    err = capsys.readouterr().err
    assert "needs Ray, which is not installed" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
