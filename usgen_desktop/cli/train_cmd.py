"""`usgen train`: fit a generator to your own labelled images.

    usgen train sdm  --data DATASET --out MODEL_DIR [--size 128] [--steps N] [--batch B] [--resume]
                     [--init-from SDM_DIR]
    usgen train lora --base SD_DIR --controlnet CN_DIR --data DATASET --out DIR [--token <us>]

Ctrl+C stops at the next step after writing a checkpoint; ``--resume`` continues from it to the
same step count. torch is imported only when a command runs, so ``usgen --help`` stays instant.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a generator (sdm, or a LoRA for controlnet) on labelled images",
        description="Train a generator on a dataset folder or USGen project of image/label pairs.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND")

    s = kinds.add_parser("sdm", help="a label-map diffusion model (runs on a CPU)",
                         description="Train an sdm model: the output folder loads in Generate "
                         "and `usgen generate --backend sdm --model-dir`.")
    s.add_argument("--data", required=True, type=Path, metavar="DATASET",
                   help="dataset folder or USGen project with images and label maps")
    s.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR")
    s.add_argument("--size", type=int, default=128, help="training size in pixels (default 128)")
    s.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    s.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    s.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--checkpoint-every", type=int, default=250, metavar="N")
    s.add_argument("--sample-every", type=int, default=500, metavar="N",
                   help="write a real|generated sample grid to MODEL_DIR/samples every N steps "
                   "(0: never)")
    s.add_argument("--blocks", default="16,32,64,128",
                   help="UNet channels per level (default 16,32,64,128: the default model's; "
                   "32,64,128,128 learns more per step at ~4x the cost)")
    s.add_argument("--layers-per-block", type=int, default=1)
    s.add_argument("--resume", action="store_true", help="continue the run in MODEL_DIR")
    s.add_argument("--init-from", type=Path, default=None, metavar="SDM_DIR",
                   help="fine-tune: start from this sdm model's weights (e.g. the shipped "
                   "models/sdm-default) instead of random ones; its size, shape and classes "
                   "are used, and its label ids must be the data's")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.set_defaults(func=run)

    lo = kinds.add_parser("lora", help="a LoRA (and optional token) for Stable Diffusion + "
                          "ControlNet", description="Fine-tune the Stable Diffusion UNet with a "
                          "LoRA on image/label pairs (control image = coloured label map).")
    lo.add_argument("--base", required=True, type=Path, metavar="SD_DIR",
                    help="local Stable Diffusion 1.5 folder (diffusers layout)")
    lo.add_argument("--controlnet", type=Path, default=None, metavar="CN_DIR",
                    help="local ControlNet folder (segmentation-conditioned)")
    lo.add_argument("--data", required=True, type=Path, metavar="DATASET")
    lo.add_argument("--out", required=True, type=Path, metavar="DIR")
    lo.add_argument("--token", default=None,
                    help="also learn a textual-inversion token, e.g. '<us>'")
    lo.add_argument("--steps", type=int, default=500)
    lo.add_argument("--batch", type=int, default=1)
    lo.add_argument("--size", type=int, default=512)
    lo.add_argument("--rank", type=int, default=8)
    lo.add_argument("--lr", type=float, default=1e-4)
    lo.add_argument("--device", default="auto")
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    lo.set_defaults(func=run)
    from usgen_desktop.cli.assist_cmd import add_train_parser

    add_train_parser(kinds)  # `usgen train assist`: the Smart tool's model
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


class _Bar:
    """A tqdm bar on stderr showing the loss; rare redraws when stderr is a log file."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="training", unit="step", file=sys.stderr,
                        disable=quiet, mininterval=0.5 if tty else 30.0, dynamic_ncols=tty)

    def __call__(self, p) -> None:
        pv = p.preview if isinstance(p.preview, dict) else {}
        if p.total and self.bar.total != p.total:
            self.bar.total = p.total
        if p.done > self.bar.n:
            self.bar.update(p.done - self.bar.n)
        if pv.get("loss") is not None:
            self.bar.set_postfix(loss=f"{pv['loss']:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _with_sigint(cancel):
    """Ctrl+C sets the cancel flag so the trainer checkpoints and returns; a second one
    interrupts at once."""
    prev = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        if cancel.cancelled:
            signal.signal(signal.SIGINT, prev)
            raise KeyboardInterrupt
        print("\nusgen: stopping after this step (Ctrl+C again to quit now)…", file=sys.stderr)
        cancel.cancel()

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests): no handler, Ctrl+C works as usual
        return lambda: None
    return lambda: signal.signal(signal.SIGINT, prev)


def run(args: argparse.Namespace) -> int:
    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.errors import UsgenError

    if args.kind == "lora":
        return _run_lora(args)
    from usgen_desktop.synthesis.training.data import from_dataset
    from usgen_desktop.synthesis.training.sdm import TrainConfig, train_sdm

    try:
        blocks = tuple(int(c) for c in str(args.blocks).split(","))
    except ValueError:
        raise UsgenError("--blocks takes channel counts separated by commas, e.g. 16,32,64.") from None
    if args.init_from is not None and not (args.init_from / "usgen_model.json").is_file():
        raise UsgenError(f"'{args.init_from}' is not an sdm model folder (no usgen_model.json).")
    if args.init_from is None and (args.size < 16 or args.size % 2 ** (len(blocks) - 1)):
        raise UsgenError(
            f"--size must be at least 16 and divisible by {2 ** (len(blocks) - 1)}."
        )
    triples, schema = from_dataset(args.data)
    cfg = TrainConfig(size=args.size, steps=args.steps, batch=args.batch, lr=args.lr,
                      device=args.device, seed=args.seed, checkpoint_every=args.checkpoint_every,
                      sample_every=args.sample_every, block_out_channels=blocks,
                      layers_per_block=args.layers_per_block,
                      norm_num_groups=min(8, blocks[0]), attention_head_dim=min(8, blocks[-1]))
    cancel = CancelToken()
    bar = _Bar(args.steps, args.quiet)
    restore = _with_sigint(cancel)
    try:
        res = train_sdm(triples, args.out, cfg, progress=bar, cancel=cancel, schema=schema,
                        resume=args.resume, info={"data": str(args.data)},
                        init_from=args.init_from)
    finally:
        restore()
        bar.close()
    if res.cancelled:
        print(f"Stopped at step {res.step} of {args.steps}; continue with --resume.",
              file=sys.stderr)
        return 130
    print(f"Trained {res.step} steps in {res.seconds / 60:.1f} min (loss {res.final_loss:.4f}); "
          f"model in {args.out}")
    return 0


def _run_lora(args: argparse.Namespace) -> int:
    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.synthesis.training.data import from_dataset
    from usgen_desktop.synthesis.training.lora import LoraConfig, train_lora

    triples, schema = from_dataset(args.data)
    cfg = LoraConfig(steps=args.steps, batch=args.batch, size=args.size, rank=args.rank,
                     lr=args.lr, device=args.device, seed=args.seed, token=args.token)
    cancel = CancelToken()
    bar = _Bar(args.steps, args.quiet)
    restore = _with_sigint(cancel)
    try:
        res = train_lora(triples, schema, args.base, args.out, cfg, controlnet_dir=args.controlnet,
                         progress=bar, cancel=cancel)
    finally:
        restore()
        bar.close()
    if res.cancelled:
        print(f"Stopped at step {res.step}; the LoRA so far is in {args.out}.", file=sys.stderr)
        return 130
    print(f"Trained {res.step} LoRA steps (loss {res.final_loss:.4f}); weights in {args.out}")
    return 0
