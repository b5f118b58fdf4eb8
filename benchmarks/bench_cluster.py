"""Generation throughput for 1 and 2 local processes, and the sampler's cost per image, to say
what one GPU per shard should give on a cluster.

Throughput: ``usgen generate --shard I/N`` as N concurrent processes (N = 1, 2; one torch thread
each, as Slurm or Ray would start them) on the demo BUSI label maps with the shipped sdm model at
its recommended settings (25 DPM-Solver++ steps, guidance 2: one batch-2 UNet forward per step),
timed from launch to the last exit (so process start and model loading are included, as on a
cluster), repeated in alternating order. The union of the 2-process run is checked equal, file
for file, to the 1-process run. The machine's load average is recorded before and after.

Sampler cost: the shipped UNet's forward at the sampler's shape (batch 2, 128²) counted in FLOPs
(torch's FlopCounterMode) and in aten operations (each one a kernel launch on a GPU), and timed
on this CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cluster.py [--per-mask 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_generation(nproc: int, masks: Path, out: Path, per_mask: int, steps: int | None
                   ) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    extra = ["--steps", str(steps)] if steps else []
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "usgen_desktop.cli.main", "generate", "--masks", str(masks),
         "--out", str(out), "--per-mask", str(per_mask), "--device", "cpu", "--no-progress",
         "--shard", f"{i}/{nproc}", *extra],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(1, nproc + 1)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"generate failed: {err[-2000:]}")
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    per_pair = [float(r["provenance"].get("seconds", 0.0)) for r in recs]
    return {"processes": nproc, "pairs": len(recs), "wall_s": round(wall, 2),
            "pairs_per_s": round(len(recs) / wall, 4),
            "median_s_per_pair_in_process": round(statistics.median(per_pair), 3),
            "load_before": round(load0, 1), "load_after": round(os.getloadavg()[0], 1)}


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for sub in ("images", "masks") for p in sorted((folder / sub).iterdir())}


def sampler_cost(model: Path, repeats: int = 5) -> dict:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from usgen_desktop.synthesis.backends.sdm import load_unet, read_config

    torch.set_num_threads(1)
    unet, _ = load_unet(model)
    cfg = read_config(model)
    unet.eval()
    h, w = cfg.size
    n_lab = len(cfg.label_ids)
    x = torch.randn(2, 1 + n_lab, h, w)  # CFG: conditional + unconditional in one batch
    t = torch.tensor(500)
    cls = torch.tensor([0, cfg.null_class])

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            unet(x, t, class_labels=cls)
        with Count():
            unet(x, t, class_labels=cls)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            unet(x, t, class_labels=cls)
            times.append(time.perf_counter() - t0)
    return {"size": [h, w], "forward_batch": 2, "gflop_per_forward":
            round(fc.get_total_flops() / 1e9, 3), "aten_ops_per_forward": Count.n,
            "cpu_s_per_forward_1_thread": round(statistics.median(times), 4),
            "parameters": int(sum(p.numel() for p in unet.parameters()))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-mask", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: model's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    masks = ROOT / "resources" / "demo"
    model = ROOT / "models" / "sdm-default"
    out: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "runs": []}
    out["sampler"] = sampler_cost(model)
    print(json.dumps(out["sampler"]), flush=True)
    procs = [int(x) for x in args.procs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        last: dict[int, Path] = {}
        for r in range(args.repeats):
            order = procs if r % 2 == 0 else procs[::-1]
            for n in order:
                folder = Path(tmp) / f"n{n}_r{r}"
                res = run_generation(n, masks, folder, args.per_mask, args.steps)
                res["repeat"] = r
                out["runs"].append(res)
                last[n] = folder
                print(json.dumps(res), flush=True)
        if len(last) > 1:
            ref = files(last[procs[0]])
            out["shards_equal_unsharded"] = all(files(f) == ref for f in last.values())
    for n in procs:
        rates = [x["pairs_per_s"] for x in out["runs"] if x["processes"] == n]
        out[f"median_pairs_per_s_{n}"] = statistics.median(rates)
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
