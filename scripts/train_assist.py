"""Train the shipped click-to-mask model ``models/assist-default`` on the shared data.

    .venv/bin/python scripts/train_assist.py --out /work/exp/i17/run1 --time-budget 4000
    .venv/bin/python scripts/train_assist.py --out /work/exp/i17/run1 --resume
    .venv/bin/python scripts/train_assist.py --out /work/exp/i17/run1 --export models/assist-default

One model for both anatomies (BUSI breast lesions with a non-empty mask, HC18 fetal heads), drawn
equally often. Held out, never trained on: the dev splits of the shipped generators
(``models/sdm-default/dev_split.txt``: 20 % of BUSI's near-duplicate groups within each class;
``models/sdm-hc18/dev_split.txt``: 20 % of HC18's subjects), so every evaluation of this project
holds out the same images. ``benchmarks/bench_assist.py`` measures on them.
The learning rate anneals over ``--time-budget`` seconds (the CPU is shared; steps vary in cost).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ../shared/data beside the checkout (a worktree sits one level deeper)
SHARED = next((p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent)
               if (p / "shared" / "data").is_dir()), ROOT.parent / "shared" / "data")
SPLITS = {"busi": ROOT / "models" / "sdm-default" / "dev_split.txt",
          "hc18": ROOT / "models" / "sdm-hc18" / "dev_split.txt"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds of training")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--channels", default="16,32,48,64,96")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from this model folder (a second stage with a fresh schedule)")
    ap.add_argument("--max-corrections", type=int, default=None,
                    help="most simulated correction passes before the trained one (default 3)")
    ap.add_argument("--zoom-crops", type=float, default=None,
                    help="share of samples cropped around the object, the zoom-in's view "
                         "(default 0.5)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export", type=Path, default=None,
                    help="copy the run's model folder (weights + json) here and stop")
    args = ap.parse_args()

    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "usgen_model.json"):
            shutil.copy2(args.out / name, args.export / name)
        print(f"exported {args.out} -> {args.export}")
        return 0

    import torch

    from usgen_desktop.assist.data import shared_samples
    from usgen_desktop.assist.model import AssistConfig
    from usgen_desktop.assist.train import TrainOptions, train_assist

    torch.set_num_threads(1)
    if not (args.data / "busi" / "manifest.csv").is_file():
        print(f"no shared data under {args.data}: nothing to train on")
        return 0
    t0 = time.time()
    sets = shared_samples(args.data, SPLITS)
    train = sets["busi_train"] + sets["hc18_train"]
    print({k: len(v) for k, v in sets.items()}, f"loaded in {time.time() - t0:.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    config = AssistConfig(size=args.size, channels=tuple(int(c) for c in args.channels.split(",")),
                          training={"data": "BUSI lesions + HC18 heads (train splits)",
                                    "held_out": {k: str(v.relative_to(ROOT))
                                                 for k, v in SPLITS.items()}})
    options = TrainOptions(steps=args.steps, batch=args.batch, lr=args.lr,
                           time_budget_s=args.time_budget, checkpoint_every=100,
                           **{k: v for k, v in (("max_corrections", args.max_corrections),
                                                ("zoom_crops", args.zoom_crops)) if v is not None})
    last = [time.time()]

    def progress(p) -> None:
        if p.done % 20 == 0:
            now = time.time()
            print(f"{time.strftime('%H:%M:%S')} {p.message} ({(now - last[0]) / 20:.2f} s/step)",
                  flush=True)
            last[0] = now

    result = train_assist(train, args.out, options, config, init_from=args.init_from,
                          resume=args.resume, progress=progress)
    print(f"done: {result.steps} steps in {result.seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
