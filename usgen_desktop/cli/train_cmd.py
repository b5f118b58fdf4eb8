"""`usgen train`: fit a generator to your own labelled images.

    usgen train sdm  --data DATASET --out MODEL_DIR [--size 128] [--steps N] [--batch B] [--resume]
                     [--init-from SDM_DIR]
    usgen train refiner --data IMAGES --out DIR [--init-from DIR] [--into SDM_DIR] [--resume]
    usgen train lora --base SD_DIR --controlnet CN_DIR --data DATASET --out DIR [--token <us>]
    usgen train controlnet --base SD_DIR --data DATASET --out DIR [--init-from CN_DIR]
                     [--lora-rank R] [--resume]

Ctrl+C stops at the next step after writing a checkpoint; ``--resume`` continues from it to the
same step count. torch is imported only when a command runs, so ``usgen --help`` stays instant.

Several GPUs or nodes: the same command under a launcher, e.g.

    torchrun --nproc-per-node 4 -m usgen_desktop.cli.main train sdm --data D --out M --batch 32
    accelerate launch --multi_gpu -m usgen_desktop.cli.main train sdm ...

``--batch`` is the global batch (each of the N processes takes batch/N), the learning rate is
unchanged, only rank 0 writes, and ``--resume`` works with any number of processes. ``train
lora`` runs under the same launchers the same way.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from usgen_desktop.cli.argtypes import channel_list, float_range, int_range


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a generator (sdm; a ControlNet or LoRA for Stable Diffusion) on "
        "labelled images",
        description="Train a generator on a dataset folder or USGen project of image/label pairs.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND")

    s = kinds.add_parser("sdm", help="a label-map diffusion model (runs on a CPU)",
                         description="Train an sdm model: the output folder loads in Generate "
                         "and `usgen generate --backend sdm --model-dir`.")
    s.add_argument("--data", required=True, type=Path, metavar="DATASET",
                   help="dataset folder or USGen project with images and label maps")
    s.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR")
    s.add_argument("--size", type=int_range(16, 1024), default=128,
                   help="training size in pixels, 16-1024 (default 128)")
    s.add_argument("--steps", type=int_range(1, 10_000_000), default=2000,
                   help="optimizer steps (default 2000)")
    s.add_argument("--batch", type=int_range(1, 1024), default=8,
                   help="images per step over all processes (default 8; under torchrun each "
                   "of N processes takes batch/N)")
    s.add_argument("--lr", type=float_range(0, 1, lo_open=True), default=2e-4,
                   help="learning rate, above 0 and at most 1 (default 2e-4)")
    s.add_argument("--warmup", type=int_range(0, 10_000_000), default=100, metavar="N",
                   help="steps of linear learning-rate warm-up (default 100)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    s.add_argument("--seed", type=int_range(0, 2**31 - 1), default=0)
    s.add_argument("--checkpoint-every", type=int_range(1), default=250, metavar="N")
    s.add_argument("--sample-every", type=int_range(0), default=500, metavar="N",
                   help="write a real|generated sample grid to MODEL_DIR/samples every N steps "
                   "(0: never)")
    s.add_argument("--blocks", type=channel_list(), default=(16, 32, 64, 128),
                   help="UNet channels per level (default 16,32,64,128: the default model's; "
                   "32,64,128,128 learns more per step at ~4x the cost)")
    s.add_argument("--layers-per-block", type=int_range(1, 4), default=1)
    s.add_argument("--resume", action="store_true", help="continue the run in MODEL_DIR")
    s.add_argument("--init-from", type=Path, default=None, metavar="SDM_DIR",
                   help="fine-tune: start from this sdm model's weights (e.g. the shipped "
                   "models/sdm-default) instead of random ones; its size, shape and classes "
                   "are used, and its label ids must be the data's")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.add_argument("--jsonl", action="store_true",
                   help="print one JSON line per step on stdout (step, steps, loss, sample png) "
                   "for a program driving the trainer, e.g. the Train dock")
    s.add_argument("--stop-file", type=Path, default=None, metavar="PATH",
                   help="stop after the step in which PATH appears, with a checkpoint, as "
                   "after Ctrl+C (how a program cancels a torchrun run)")
    s.set_defaults(func=run)

    r = kinds.add_parser("refiner", help="the texture refiner of an sdm model (images only, "
                         "no labels)", description="Train the texture refiner, sdm's second stage "
                         "that draws the fine grain at the label map's own size, on real scans "
                         "(any images: labels are not needed). Put the result in an sdm model "
                         "folder as refiner/ (--into does it).")
    r.add_argument("--data", required=True, type=Path, metavar="IMAGES",
                   help="dataset folder, USGen project or plain folder of images")
    r.add_argument("--out", required=True, type=Path, metavar="DIR")
    r.add_argument("--base-size", type=int, default=128,
                   help="the size of the sdm model it refines (default 128)")
    r.add_argument("--patch", type=int, default=128, help="crop size in pixels (default 128)")
    r.add_argument("--steps", type=int, default=8000, help="optimizer steps (default 8000)")
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--lr", type=float, default=3e-4)
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--checkpoint-every", type=int, default=250, metavar="N")
    r.add_argument("--resume", action="store_true", help="continue the run in DIR")
    r.add_argument("--init-from", type=Path, default=None, metavar="DIR",
                   help="start from this refiner (or the refiner/ of this sdm model folder), so "
                   "your scans teach it their grain in fewer steps")
    r.add_argument("--into", type=Path, default=None, metavar="SDM_DIR",
                   help="when done, copy the refiner into this sdm model folder as refiner/")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    r.set_defaults(func=run)

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
    lo.add_argument("--steps", type=int_range(1, 10_000_000), default=500)
    lo.add_argument("--batch", type=int_range(1, 256), default=1)
    lo.add_argument("--size", type=int_range(16, 2048), default=512)
    lo.add_argument("--rank", type=int_range(1, 1024), default=8)
    lo.add_argument("--lr", type=float_range(0, 1, lo_open=True), default=1e-4)
    lo.add_argument("--device", default="auto")
    lo.add_argument("--seed", type=int_range(0, 2**31 - 1), default=0)
    lo.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    lo.set_defaults(func=run)

    c = kinds.add_parser("controlnet", help="a segmentation ControlNet for Stable Diffusion "
                         "(a GPU is advised)", description="Train a ControlNet conditioned on "
                         "the label map in the schema's colours, with class prompts, Stable "
                         "Diffusion frozen (seeds/000). DIR loads as the controlnet backend's "
                         "controlnet_dir (and lora, with --lora-rank).")
    c.add_argument("--base", required=True, type=Path, metavar="SD_DIR",
                   help="local Stable Diffusion 1.5 folder (diffusers layout, safetensors)")
    c.add_argument("--data", required=True, type=Path, metavar="DATASET")
    c.add_argument("--out", required=True, type=Path, metavar="DIR")
    c.add_argument("--init-from", type=Path, default=None, metavar="CN_DIR",
                   help="start from this ControlNet folder (default: a copy of the base UNet's "
                   "encoder with zero convolutions)")
    c.add_argument("--lora-rank", type=int, default=0, metavar="R",
                   help="also train a LoRA of rank R on the UNet in the same run (0: none)")
    c.add_argument("--steps", type=int, default=1000)
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--size", type=int, default=512, help="training size, a multiple of 8")
    c.add_argument("--lr", type=float, default=1e-5, help="ControlNet learning rate")
    c.add_argument("--lora-lr", type=float, default=1e-4)
    c.add_argument("--checkpoint-every", type=int, default=250, metavar="N")
    c.add_argument("--no-mixed-precision", action="store_true",
                   help="full precision on CUDA too (mixed precision is used on CUDA only)")
    c.add_argument("--device", default="auto")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--resume", action="store_true", help="continue the run in DIR")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    c.set_defaults(func=run)

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


class _JsonLines:
    """Progress as JSON lines on stdout: ``{"step", "steps", "loss", "sample"}`` where sample is
    the path of the grid PNG the trainer just wrote (the Train dock reads them from a torchrun
    subprocess)."""

    def __init__(self, bar: _Bar, out: Path) -> None:
        self.bar, self.out = bar, Path(out)

    def __call__(self, p) -> None:
        import json

        self.bar(p)
        pv = p.preview if isinstance(p.preview, dict) else {}
        step = int(pv.get("step", p.done) or 0)
        sample = None
        if pv.get("sample") is not None:
            sample = str(self.out / "samples" / f"step_{step:07d}.png")
        print(json.dumps({"step": step, "steps": p.total, "loss": pv.get("loss"),
                          "sample": sample, "message": p.message}), flush=True)


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
    from usgen_desktop.errors import UsgenError

    if args.kind == "lora":
        return _run_lora(args)
    if args.kind == "refiner":
        return _run_refiner(args)
    if args.kind == "controlnet":
        return _run_controlnet(args)
    from usgen_desktop.cli.argtypes import out_folder
    from usgen_desktop.synthesis.training.data import from_dataset
    from usgen_desktop.synthesis.training.sdm import TrainConfig, train_sdm

    blocks = tuple(args.blocks)
    if args.init_from is not None and not (args.init_from / "usgen_model.json").is_file():
        raise UsgenError(f"'{args.init_from}' is not an sdm model folder (no usgen_model.json).")
    if args.init_from is None and (args.size < 16 or args.size % 2 ** (len(blocks) - 1)):
        raise UsgenError(
            f"--size must be at least 16 and divisible by {2 ** (len(blocks) - 1)}."
        )
    if args.init_from is None and args.size >> (len(blocks) - 1) < 4:
        raise UsgenError(f"--size {args.size} is too small for {len(blocks)} levels of --blocks; "
                         "use fewer levels or a larger size.")
    out_folder(args.out)
    triples, schema = from_dataset(args.data)
    cfg = TrainConfig(size=args.size, steps=args.steps, batch=args.batch, lr=args.lr,
                      warmup=args.warmup, device=args.device, seed=args.seed,
                      checkpoint_every=args.checkpoint_every,
                      sample_every=args.sample_every, block_out_channels=blocks,
                      layers_per_block=args.layers_per_block,
                      norm_num_groups=min(8, blocks[0]), attention_head_dim=min(8, blocks[-1]))
    from usgen_desktop.synthesis.training import distributed
    from usgen_desktop.synthesis.training.launch import StopFileToken

    main_rank = int(os.environ.get("RANK", "0") or 0) == 0  # the others stay silent
    cancel = StopFileToken(args.stop_file)
    bar = _Bar(args.steps, args.quiet or not main_rank or args.jsonl)
    report = _JsonLines(bar, args.out) if args.jsonl else bar
    restore = _with_sigint(cancel)
    try:
        res = train_sdm(triples, args.out, cfg, progress=report, cancel=cancel, schema=schema,
                        resume=args.resume, info={"data": str(args.data)},
                        init_from=args.init_from)
    finally:
        restore()
        bar.close()
        distributed.shutdown()
    # under a launcher a stopped run exits 0: torchrun reports any other code as a crash
    stopped = 0 if distributed.launched() else 130
    if not main_rank:
        return stopped if res.cancelled else 0
    if res.cancelled:
        print(f"Stopped at step {res.step} of {args.steps}; continue with --resume.",
              file=sys.stderr)
        return stopped
    print(f"Trained {res.step} steps in {res.seconds / 60:.1f} min (loss {res.final_loss:.4f}); "
          f"model in {args.out}")
    return 0


def _run_lora(args: argparse.Namespace) -> int:
    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.synthesis.training.data import from_dataset
    from usgen_desktop.synthesis.training.lora import LoraConfig, train_lora

    if args.size % 8:
        from usgen_desktop.errors import UsgenError

        raise UsgenError(f"--size must be a multiple of 8 (got {args.size}).")
    from usgen_desktop.cli.argtypes import out_folder

    out_folder(args.out)
    triples, schema = from_dataset(args.data)
    cfg = LoraConfig(steps=args.steps, batch=args.batch, size=args.size, rank=args.rank,
                     lr=args.lr, device=args.device, seed=args.seed, token=args.token)
    from usgen_desktop.synthesis.training import distributed

    main_rank = int(os.environ.get("RANK", "0") or 0) == 0  # the others stay silent
    cancel = CancelToken()
    bar = _Bar(args.steps, args.quiet or not main_rank)
    restore = _with_sigint(cancel)
    try:
        res = train_lora(triples, schema, args.base, args.out, cfg, controlnet_dir=args.controlnet,
                         progress=bar, cancel=cancel)
    finally:
        restore()
        bar.close()
        distributed.shutdown()
    if not main_rank:
        return 0
    if res.cancelled:
        print(f"Stopped at step {res.step}; the LoRA so far is in {args.out}.", file=sys.stderr)
        return 0 if distributed.launched() else 130  # torchrun reads other codes as crashes
    print(f"Trained {res.step} LoRA steps (loss {res.final_loss:.4f}); weights in {args.out}")
    return 0


def _run_controlnet(args: argparse.Namespace) -> int:
    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.synthesis.training.controlnet import ControlNetConfig, train_controlnet
    from usgen_desktop.synthesis.training.data import from_dataset

    if args.steps < 1 or args.batch < 1 or args.lora_rank < 0 or args.checkpoint_every < 0:
        raise UsgenError("--steps and --batch must be at least 1, --lora-rank and "
                         "--checkpoint-every 0 or more.")
    triples, schema = from_dataset(args.data)
    cfg = ControlNetConfig(steps=args.steps, batch=args.batch, size=args.size, lr=args.lr,
                           lora_rank=args.lora_rank, lora_lr=args.lora_lr, device=args.device,
                           seed=args.seed, checkpoint_every=args.checkpoint_every,
                           mixed_precision=not args.no_mixed_precision)
    cancel = CancelToken()
    bar = _Bar(args.steps, args.quiet)
    restore = _with_sigint(cancel)
    try:
        res = train_controlnet(triples, schema, args.base, args.out, cfg,
                               init_from=args.init_from, progress=bar, cancel=cancel,
                               resume=args.resume, info={"data": str(args.data)})
    finally:
        restore()
        bar.close()
    if res.cancelled:
        print(f"Stopped at step {res.step} of {args.steps}; continue with --resume.",
              file=sys.stderr)
        return 130
    print(f"Trained {res.step} ControlNet steps in {res.seconds / 60:.1f} min (loss "
          f"{res.final_loss:.4f}); ControlNet in {args.out}")
    return 0


def images_from(path: Path) -> list:
    """Every image of a dataset folder or project (labels ignored), or of a plain folder of
    image files; unreadable files are skipped and counted on stderr."""
    from usgen_desktop.errors import DatasetError, UsgenError
    from usgen_desktop.io import is_image_file, open_dataset, read_image

    path = Path(path)
    try:
        docs = open_dataset(path).documents
        imgs = [d.image.to_uint8() for d in docs if getattr(d, "image", None) is not None]
        if imgs:
            return imgs
    except UsgenError:
        pass
    if not path.is_dir():
        raise DatasetError(f"'{path}' is neither a dataset nor a folder of images.")
    imgs, bad = [], 0
    for f in sorted(path.rglob("*")):
        if f.is_file() and is_image_file(f):
            try:
                imgs.append(read_image(f).to_uint8())
            except UsgenError:
                bad += 1
    if bad:
        print(f"usgen: skipped {bad} file(s) that could not be read as images.", file=sys.stderr)
    if not imgs:
        raise DatasetError(f"The folder '{path}' holds no images to train the refiner on.")
    return imgs


def _run_refiner(args: argparse.Namespace) -> int:
    import shutil

    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.synthesis.training.refiner import RefinerTrainConfig, train_refiner

    if args.into is not None and not (args.into / "usgen_model.json").is_file():
        raise UsgenError(f"'{args.into}' is not an sdm model folder (no usgen_model.json).")
    if not 8 <= args.base_size <= 4096:
        raise UsgenError("--base-size must be between 8 and 4096 pixels.")
    imgs = images_from(args.data)
    cfg = RefinerTrainConfig(base_size=args.base_size, patch=args.patch, steps=args.steps,
                             batch=args.batch, lr=args.lr, device=args.device, seed=args.seed,
                             checkpoint_every=args.checkpoint_every)
    cancel = CancelToken()
    bar = _Bar(args.steps, args.quiet)
    restore = _with_sigint(cancel)
    try:
        res = train_refiner(imgs, args.out, cfg, progress=bar, cancel=cancel, resume=args.resume,
                            info={"data": str(args.data)}, init_from=args.init_from)
    finally:
        restore()
        bar.close()
    if res.cancelled:
        print(f"Stopped at step {res.step} of {args.steps}; continue with --resume.",
              file=sys.stderr)
        return 130
    where = args.out
    if args.into is not None:
        dest = args.into / "refiner"
        tmp = args.into / "refiner.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(args.out, tmp, ignore=shutil.ignore_patterns("checkpoints", "samples"))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
        where = dest
    print(f"Trained the refiner {res.step} steps in {res.seconds / 60:.1f} min; it is in {where}")
    return 0
