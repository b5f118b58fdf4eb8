"""sdm backend speed on this machine: seconds per image at 128² and 256² for 10/25/50
DPM-Solver++ steps, through the public API (``synthesis.request.run``), with a randomly
initialised model of the default architecture (speed does not depend on the weights).

Reference measured in the same run: the bare UNet forward passes alone (steps x one batch-1
forward), so the ratio shows what the sampler, conditioning and resizing add.

    .venv/bin/python benchmarks/bench_sdm.py [--repeats 3] [--sizes 128,256] [--steps 10,25,50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--steps", default="10,25,50")
    ap.add_argument("--blocks", default="16,32,64,128")
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice; 1 is faster on a busy machine)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.synthesis.backends.sdm import SdmConfig, build_unet, save_model
    from usgen_desktop.synthesis.request import GenerationRequest, run

    if args.threads:
        torch.set_num_threads(args.threads)
    blocks = tuple(int(c) for c in args.blocks.split(","))
    schema = load_preset("busi")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"blocks {blocks} x {args.layers_per_block}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            cfg = SdmConfig(size=(size, size), schema=schema,
                            classes=["normal", "benign", "malignant"])
            torch.manual_seed(0)
            unet = build_unet(cfg, block_out_channels=blocks,
                              layers_per_block=args.layers_per_block)
            folder = Path(tmp) / f"m{size}"
            save_model(unet, cfg, folder)
            params = sum(p.numel() for p in unet.parameters()) / 1e6
            lab = np.zeros((size, size), np.uint8)
            lab[size // 4: size // 2, size // 3: 2 * size // 3] = 1
            # reference: one batch-1 forward pass, as the sampler calls it
            x = torch.randn(1, 1 + len(cfg.label_ids), size, size)
            cls = torch.tensor([1])
            with torch.no_grad():
                unet(x, 10, class_labels=cls)  # warm-up
                fw = []
                for _ in range(max(3, args.repeats)):
                    t0 = time.perf_counter()
                    unet(x, 10, class_labels=cls)
                    fw.append(time.perf_counter() - t0)
            forward = statistics.median(fw)
            step_list = [int(s) for s in args.steps.split(",")]
            first_steps = step_list[0]
            for steps in step_list:
                req = GenerationRequest([LabelMap(lab)], schema, backend="sdm",
                                        model_dir=str(folder), classes=["benign"], steps=steps,
                                        device="cpu", params={"sampler": "dpm++"})
                if steps == first_steps:  # warm-up: loads the model once (cached afterwards)
                    req.steps = 2
                    run(req)
                    req.steps = steps
                times = []
                for r in range(args.repeats):
                    req.seed = r
                    t0 = time.perf_counter()
                    run(req)
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                rows.append((size, steps, med, forward * steps, params))
                print(f"{size}² {steps:3d} steps: {med:6.2f} s/image (median of {args.repeats}); "
                      f"bare forwards {forward * steps:6.2f} s -> x{med / (forward * steps):.2f}; "
                      f"{params:.1f}M params", flush=True)
    print("\n| size | steps | s/image (median) | bare UNet forwards | ratio |")
    print("|---|---|---|---|---|")
    for size, steps, med, ref, _ in rows:
        print(f"| {size}² | {steps} | {med:.2f} | {ref:.2f} | {med / ref:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
