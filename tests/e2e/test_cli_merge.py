"""Generation on a cluster: the Slurm job-array template run as its array tasks would run it,
`usgen merge` finding a deliberately missing shard, merging duplicates and shard folders, and
the merged run equal to the unsharded one byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_generate import _dataset, _files, _gen, _manifest
from usgen_desktop.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "packaging" / "cluster" / "generate.slurm"


def _records(folder: Path) -> list[dict]:
    """Manifest records without what differs between runs of the same item (time taken)."""
    out = []
    for rec in _manifest(folder):
        prov = {k: v for k, v in rec["provenance"].items() if k not in ("seconds", "time")}
        out.append({**rec, "provenance": prov})
    return out


def _array_task(task: int, count: int, masks: Path, out: Path) -> subprocess.CompletedProcess:
    """generate.slurm as Slurm runs array task ``task`` of ``count``."""
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count),
           "MASKS": str(masks), "OUT": str(out), "PER_MASK": "2", "SEED": "3",
           "EXTRA": "--backend speckle", "USGEN": f"{sys.executable} -m usgen_desktop.cli.main",
           "PYTHONPATH": str(REPO), "USGEN_DATA_DIR": str(out.parent / "data"),
           "USGEN_CONFIG_DIR": str(out.parent / "cfg")}
    return subprocess.run(["bash", str(SLURM)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def test_slurm_array_with_a_missing_shard_then_complete(tmp_path, capsys):
    ds = _dataset(tmp_path / "ds")
    whole, shared = tmp_path / "whole", tmp_path / "shared"
    assert _gen("--masks", str(ds), "--per-mask", "2", "--seed", "3", "--out", str(whole)) == 0
    for task in (0, 2):  # task 1 "was pre-empted"
        r = _array_task(task, 3, ds, shared)
        assert r.returncode == 0, r.stderr
    capsys.readouterr()
    assert main(["merge", str(shared)]) == 2
    err = capsys.readouterr().err
    # shard 2 of 3 makes items 1 and 4 (i % 3 == 1): named in one sentence, nothing written
    assert "2 of 6 items are missing" in err and "item 1 (case0 #1)" in err
    assert "item 4 (case2 #0)" in err and "Traceback" not in err
    assert sorted(r["item"] for r in _manifest(shared)) == [0, 2, 3, 5]  # unsorted lines kept
    assert main(["merge", str(shared), "--allow-missing", "--check"]) == 0
    assert "4 of 6" in capsys.readouterr().err

    r = _array_task(1, 3, ds, shared)  # resubmitted
    assert r.returncode == 0, r.stderr
    assert main(["merge", str(shared)]) == 0
    assert "merged 6 of 6 items" in capsys.readouterr().err
    assert [r["item"] for r in _manifest(shared)] == list(range(6))
    assert _files(shared) == _files(whole)
    assert _records(shared) == sorted(_records(whole), key=lambda r: r["item"])


def test_duplicates_are_reported_and_kept_once(tmp_path, capsys):
    ds = _dataset(tmp_path / "ds", n=2)
    out = tmp_path / "out"
    assert _gen("--masks", str(ds), "--out", str(out)) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")  # a shard run twice
    capsys.readouterr()
    assert main(["merge", str(out)]) == 0
    assert "1 written twice" in capsys.readouterr().err
    assert [r["item"] for r in _manifest(out)] == [0, 1]
    # a duplicate that disagrees is refused, not silently dropped
    bad = json.loads(lines[0])
    bad["class"] = "other"
    (out / "manifest.jsonl").write_text("\n".join([*lines, json.dumps(bad)]) + "\n")
    assert main(["merge", str(out)]) == 2
    assert "written twice with different contents" in capsys.readouterr().err


def test_shard_folders_merge_into_one(tmp_path, capsys):
    ds = _dataset(tmp_path / "ds")
    whole, merged = tmp_path / "whole", tmp_path / "merged"
    args = ["--masks", str(ds), "--per-mask", "2", "--seed", "3", "--format", "nnunet"]
    assert _gen(*args, "--out", str(whole)) == 0
    parts = [tmp_path / f"s{i}" for i in (1, 2)]
    for i, part in enumerate(parts, 1):
        assert _gen(*args, "--out", str(part), "--shard", f"{i}/2") == 0
    capsys.readouterr()
    assert main(["merge", *map(str, parts)]) == 2
    assert "need --out" in capsys.readouterr().err
    assert main(["merge", *map(str, parts), "--out", str(merged)]) == 0
    (ref,) = [p for p in whole.iterdir() if p.is_dir()]
    target = merged / ref.name  # Dataset501_USGenSynthetic, as generate writes it
    assert _files(target) == _files(ref)
    assert json.loads((target / "dataset.json").read_text())["numTraining"] == 6

    other = tmp_path / "other"
    assert _gen("--masks", str(ds), "--per-mask", "2", "--seed", "4", "--format", "nnunet",
                "--out", str(other), "--shard", "2/2") == 0
    capsys.readouterr()
    assert main(["merge", str(parts[0]), str(other), "--out", str(tmp_path / "x")]) == 2
    assert "different generation run" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["generate.slurm", "merge.slurm", "train.slurm"])
def test_cluster_scripts_parse(name):
    r = subprocess.run(["bash", "-n", str(REPO / "packaging" / "cluster" / name)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
