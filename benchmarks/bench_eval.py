"""Evaluation on real data: does a synthetic set help a U-Net on BUSI?

Opens ``../shared/data/busi`` (skips cleanly when it is missing), holds out 20 % of the
near-duplicate *groups* of each class (seed 0) as the dev split, generates one synthetic image per TRAIN
label map with a backend (``speckle`` by default, via ``usgen_desktop.synthesis.run``) and
runs ``evaluate``: U-Net Dice for real only / real + synthetic / synthetic only on the dev
split, realism AUC, FID/KID beside real-vs-real at the same N, mask fidelity, speckle
statistics. References measured in the same run: the real-only arm (for Dice) and two real
halves (for FID). Also times one U-Net step and the generator per image (median of runs).

    .venv/bin/python benchmarks/bench_eval.py [--dataset busi|hc18] [--size 64] [--epochs 20] [--out DIR]
        [--backend speckle] [--synthetic DATASET] [--write-dev-split FILE] [--threads 2]

Scarce real data: ``--real-fraction 0.25`` keeps a quarter of the training groups for the
U-Nets; ``--sources kept --variants 4`` generates only from those images' label maps, four
deformed variants each (masks as scarce as images), and a generator trained on the same
quarter (``scripts/train_default.py --train-fraction 0.25``) keeps the comparison fair.
``--save-synthetic`` / ``--load-synthetic`` reuse one generated set across protocols.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from usgen_desktop.core.document import Document  # noqa: E402
from usgen_desktop.core.image import UltrasoundImage  # noqa: E402
from usgen_desktop.core.tasks import Progress  # noqa: E402
from usgen_desktop.errors import UsgenError  # noqa: E402
from usgen_desktop.evaluation import EvalConfig, evaluate  # noqa: E402
from usgen_desktop.evaluation.prepare import doc_group, group_split, scarce_documents  # noqa: E402
from usgen_desktop.io import open_dataset  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DATA = SHARED / "busi"


def hc18_with_sector(docs: list[Document]) -> list[Document]:
    """Copies of HC18 documents whose label maps carry the image's fan as the sector label
    (head clipped to it), as the HC18 model was trained (scripts/train_default.py)."""
    from usgen_desktop.core.sector import apply_sector, detect_sector

    out = []
    for d in docs:
        fit = detect_sector(d.image.to_uint8(), d.schema.probe)
        out.append(Document(labels=apply_sector(d.labels, fit.mask, d.schema.sector_id),
                            schema=d.schema, image=d.image, name=d.name, tags=dict(d.tags),
                            parent=d.uid))
    return out


def head_only(docs: list[Document], sector_id: int) -> list[Document]:
    """The sector label folded into background, so every Dice is about the head alone."""
    from usgen_desktop.core.labels import LabelMap

    for d in docs:
        lab = d.labels.data
        d.labels = LabelMap(np.where(lab == sector_id, 0, lab).astype(lab.dtype))
    return docs


def code_version() -> str:
    """The commit the generator ran from, with '+dirty' when synthesis/ had local edits
    (others commit to this repo while a benchmark runs)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "usgen_desktop/synthesis"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def unet_step_ms(size: int, batch: int, repeats: int = 7) -> float:
    """Median milliseconds of one U-Net training step (forward + backward + Adam)."""
    import torch
    import torch.nn.functional as F

    from usgen_desktop.evaluation.nets import build_unet

    torch.manual_seed(0)
    model = build_unet(2, 16)
    opt = torch.optim.Adam(model.parameters())
    x = torch.rand(batch, 1, size, size)
    y = torch.randint(0, 2, (batch, size, size))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def naive_painter(train_docs: list[Document], seed: int) -> list[Document]:
    """The simplest generator there is, as a floor for the metrics: every label region filled
    with Rayleigh speckle of that label's median brightness in the real training images,
    blurred to a 2-px grain. Not a product backend; lives here only as a reference."""
    import cv2

    rng = np.random.default_rng(seed)
    ids = sorted({int(i) for d in train_docs for i in np.unique(d.labels.data)})
    level = {k: float(np.median(np.concatenate(
        [d.image.to_uint8()[d.labels.data == k] for d in train_docs if (d.labels.data == k).any()])))
        for k in ids}
    out = []
    for d in train_docs:
        lm = d.labels.data
        mean = np.zeros(lm.shape, np.float32)
        for k in ids:
            mean[lm == k] = max(level[k], 1.0)
        sigma = mean / np.sqrt(np.pi / 2)  # Rayleigh mean = sigma * sqrt(pi / 2)
        img = rng.rayleigh(1.0, lm.shape).astype(np.float32) * sigma
        img = cv2.GaussianBlur(img, (0, 0), 1.0)
        out.append(Document(labels=d.labels.copy(), schema=d.schema,
                            image=UltrasoundImage(np.clip(img, 0, 255).astype(np.uint8)),
                            name=f"naive_{d.name}", tags=dict(d.tags), parent=d.uid))
    return out


def generate(train_docs: list[Document], backend: str, seed: int, size: int | None,
             model_dir: str | None = None, steps: int = 25, guidance: float = 1.0
             ) -> tuple[list[Document], list[float]]:
    """One synthetic document per training label map, tagged with its source's class and
    group (so the realism folds keep a synthetic image beside its source)."""
    from usgen_desktop.synthesis.request import GenerationRequest, run

    schema = train_docs[0].schema
    req = GenerationRequest(label_maps=[d.labels for d in train_docs], schema=schema,
                            backend=backend, classes=[d.tags.get("class") for d in train_docs],
                            seed=seed, size=None if size is None else (size, size),
                            model_dir=model_dir, steps=steps, guidance=guidance)
    last = [0.0]

    def show(p: Progress) -> None:
        if time.perf_counter() - last[0] > 20:
            last[0] = time.perf_counter()
            print(f"  generate {p.done}/{p.total} {p.message}", flush=True)

    results = run(req, show)
    out, seconds = [], []
    for r in results:
        src = train_docs[r.source_index]
        seconds.append(float(r.provenance.get("seconds", float("nan"))))
        out.append(Document(labels=r.label_map, schema=schema,
                            image=UltrasoundImage(r.image), name=f"syn_{src.name}",
                            tags={"class": src.tags.get("class"), "group": src.tags.get("group")},
                            parent=src.uid, provenance=r.provenance))
    return out, seconds


def deformed(docs: list[Document], k: int, seed: int) -> list[Document]:
    """``k`` random affine + elastic variants of each label map (the app's Tools > Deform
    defaults, the ranges of echo-from-noise), each keeping its source's image, class, group
    and uid as parent: the maps a user would generate from when masks are scarce too."""
    from usgen_desktop.core.deform import DeformParams, make_variants

    out = []
    for d in docs:
        for v in make_variants(d.labels, k, DeformParams(), seed, sector_id=d.schema.sector_id,
                               source=d.name):
            out.append(Document(labels=v.label_map, schema=d.schema, image=d.image,
                                name=f"{d.name}_v{v.index}", tags=dict(d.tags), parent=d.uid))
    return out


def save_synthetic(path: Path, docs: list[Document], seconds: list[float]) -> None:
    """Keep a generated set (images, label maps, names, class and group tags, seconds per
    image) so that further protocols can reuse it without generating again."""
    arrays = {f"image_{i}": d.image.to_uint8() for i, d in enumerate(docs)}
    arrays.update({f"labels_{i}": d.labels.data for i, d in enumerate(docs)})
    meta = [{"name": d.name, "tags": d.tags} for d in docs]
    np.savez_compressed(path, meta=np.array(json.dumps({"docs": meta, "seconds": seconds})),
                        **arrays)


def load_synthetic(path: Path, real: list[Document]) -> tuple[list[Document], list[float]]:
    """A set written by save_synthetic, each document linked again to its real source."""
    from usgen_desktop.core.labels import LabelMap

    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    by_name = {f"syn_{d.name}": d for d in real}
    out = []
    for i, m in enumerate(meta["docs"]):
        src = by_name.get(m["name"])
        out.append(Document(labels=LabelMap(z[f"labels_{i}"]), schema=real[0].schema,
                            image=UltrasoundImage(z[f"image_{i}"]), name=m["name"],
                            tags=m["tags"], parent=src.uid if src else None))
    return out, list(meta["seconds"])


def real_only(real: list[Document], train_idx, test_idx, args: argparse.Namespace) -> int:
    """The baseline alone: U-Net trained on the real train split, Dice on the dev split."""

    from usgen_desktop.evaluation.prepare import label_ids_of, to_arrays
    from usgen_desktop.evaluation.segmentation import downstream_utility

    ids = label_ids_of(real)
    arr = to_arrays(real, args.size, ids)
    train, test = arr.subset(train_idx), arr.subset(test_idx)
    steps = EvalConfig(epochs=args.epochs, steps=args.steps).steps_per_arm(len(train))
    step_ms = unet_step_ms(args.size, 8)
    t0 = time.perf_counter()
    m, _ = downstream_utility(train, train.subset([]), test, len(ids), steps, seed=args.seed,
                              arms=("real_only",), repeats=args.repeats)
    d = m["real_only"]
    print(json.dumps({"size": args.size, "epochs": args.epochs, "steps": steps,
                      "unet_step_ms": round(step_ms, 1), "wall_s": round(time.perf_counter() - t0, 1),
                      "real_only": {k: d[k] for k in ("mean", "per_seed", "std_over_seeds",
                                                      "global", "n_images", "seconds")}},
                     indent=2))
    return 0


def realism_sensitivity(real: list[Document], args: argparse.Namespace) -> int:
    """How strong is the realism classifier? Half of the real groups against the other half,
    untouched and with small, known changes: an AUC near 0.5 for a generator means little
    unless changes this small are caught."""
    import cv2

    from usgen_desktop.evaluation.fid import split_halves
    from usgen_desktop.evaluation.prepare import to_arrays
    from usgen_desktop.evaluation.realism import realism_auc

    arr = to_arrays(real, args.realism_size, [0, 1])
    a, b = split_halves(arr.groups, args.seed)
    changes = {
        "none (real vs real)": lambda x: x,
        "gaussian blur sigma 1 px": lambda x: cv2.GaussianBlur(x, (0, 0), 1.0),
        "gamma 0.8 (brighter mid-tones)": lambda x: x ** 0.8,
        "median filter 5 px (speckle smoothed)": lambda x: cv2.medianBlur(
            (x * 255).astype(np.uint8), 5).astype(np.float32) / 255,
        "added gaussian noise sd 0.03": lambda x: np.clip(
            x + np.random.default_rng(0).normal(0, 0.03, x.shape).astype(np.float32), 0, 1),
    }
    rows = {}
    for name, fn in changes.items():
        t0 = time.perf_counter()
        other = np.stack([fn(x) for x in arr.images[b]]).astype(np.float32)
        r = realism_auc(arr.images[a], other, [arr.groups[i] for i in a],
                        [arr.groups[i] for i in b], folds=5, epochs=args.realism_epochs,
                        seed=args.seed)
        rows[name] = {"auc": round(r["auc"], 3), "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name:40s} AUC {r['auc']:.3f}  ({rows[name]['seconds']} s)", flush=True)
    print(json.dumps({"size": args.realism_size, "epochs": args.realism_epochs,
                      "n": [len(a), len(b)], "auc": rows}, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["busi", "hc18"], default="busi",
                    help="hc18: the generator gets label maps with the detected fan (as the HC18 "
                    "model was trained); every Dice is on the head (sector = background)")
    ap.add_argument("--data", default=None, help="default: ../shared/data/<dataset>")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--realism-epochs", type=int, default=8)
    ap.add_argument("--realism-size", type=int, default=128,
                    help="the classifier looks at speckle, so give it more pixels than the U-Net")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="speckle",
                    help="a synthesis backend, or 'naive' (a Rayleigh painter kept here as the "
                    "metrics' floor)")
    ap.add_argument("--model-dir", default=None, help="model folder for sdm / controlnet")
    ap.add_argument("--gen-steps", type=int, default=25, help="sampler steps per image")
    ap.add_argument("--gen-guidance", type=float, default=1.0,
                    help="classifier-free guidance (sdm: the default model recommends 3)")
    ap.add_argument("--gen-size", type=int, default=None,
                    help="generate at this square size (default: each label map's own size)")
    ap.add_argument("--synthetic", default=None, help="use this synthetic dataset instead")
    ap.add_argument("--control", action="store_true",
                    help="a control run: the 'synthetic' set is a copy of the real training "
                    "images (realism AUC must come out 0.5, synthetic only = real only)")
    ap.add_argument("--out", default="/tmp/usgen_eval_busi")
    ap.add_argument("--write-dev-split", default=None, metavar="FILE")
    ap.add_argument("--positive-control", action="store_true",
                    help="half of the real training groups play 'synthetic': perfect synthetic "
                    "data, so real + synthetic must beat real only (the gain the protocol can "
                    "see at this budget)")
    ap.add_argument("--realism-sensitivity", action="store_true",
                    help="only measure how small a change the realism classifier catches")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1, help="seeds per U-Net arm")
    ap.add_argument("--steps", type=int, default=None, help="steps per arm (overrides epochs)")
    ap.add_argument("--real-fraction", type=float, default=1.0,
                    help="the U-Nets see this fraction of the real training groups (scarce data)")
    ap.add_argument("--sources", choices=["train", "kept"], default="train",
                    help="generate from every training label map, or only from those of the "
                    "real images that --real-fraction keeps (masks as scarce as images)")
    ap.add_argument("--variants", type=int, default=0,
                    help="generate from this many deformed variants of each source label map "
                    "instead of the maps themselves")
    ap.add_argument("--real-only", action="store_true",
                    help="only the real-only U-Net on the dev split (no synthetic set needed)")
    ap.add_argument("--no-fid", action="store_true")
    ap.add_argument("--save-synthetic", default=None, metavar="NPZ",
                    help="write the generated set here, to reuse with --load-synthetic")
    ap.add_argument("--load-synthetic", default=None, metavar="NPZ",
                    help="reuse a set written by --save-synthetic instead of generating")
    args = ap.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # before any timing, so every figure uses it
    data = Path(args.data) if args.data else SHARED / args.dataset
    if not data.exists():
        print(f"skipped: {data} not found (the shared data is not on this machine)")
        return 0
    t0 = time.perf_counter()
    real = open_dataset(data).documents
    t_open = time.perf_counter() - t0
    groups = [doc_group(d) for d in real]
    # the split scripts/train_default.py held out: by class for BUSI, none for HC18
    train_idx, test_idx = group_split(groups, 0.2, args.seed,
                                      strata=None if args.dataset == "hc18"
                                      else [d.tags.get("class") for d in real])
    dev = [real[i].name for i in test_idx]
    if args.write_dev_split:
        Path(args.write_dev_split).write_text(
            "# BUSI dev split: 20 % of near-duplicate groups within each class, seed "
            f"{args.seed} (usgen_desktop.evaluation.prepare.group_split)\n" + "\n".join(dev) + "\n")
    print(f"{args.dataset.upper()}: {len(real)} images, {len(set(groups))} groups; train {len(train_idx)}, "
          f"dev {len(test_idx)} ({len({groups[i] for i in test_idx})} groups); open {t_open:.1f} s")
    train_docs = [real[i] for i in train_idx]

    if args.realism_sensitivity:
        return realism_sensitivity(real, args)
    if args.real_only:
        return real_only(real, train_idx, test_idx, args)
    print(f"code: {code_version()}", flush=True)
    gen_seconds: list[float] = []
    if args.positive_control:
        tr_groups = [groups[i] for i in train_idx]
        keep, give = group_split(tr_groups, 0.5, args.seed,
                                 strata=[real[i].tags.get("class") for i in train_idx])
        synthetic = [real[train_idx[i]] for i in give]
        real = [real[train_idx[i]] for i in keep] + [real[i] for i in test_idx]
        print(f"positive control: real train {len(keep)}, 'synthetic' = other real train "
              f"images {len(synthetic)}, dev {len(test_idx)}")
    elif args.control:
        synthetic = [Document(labels=d.labels.copy(), schema=d.schema, image=d.image,
                              name=f"copy_{d.name}", tags=dict(d.tags), parent=d.uid)
                     for d in train_docs]
    elif args.backend == "naive":
        t0 = time.perf_counter()
        synthetic = naive_painter(train_docs, args.seed)
        gen_seconds = [(time.perf_counter() - t0) / len(synthetic)]
    elif args.synthetic:
        synthetic = open_dataset(Path(args.synthetic)).documents
    elif args.load_synthetic:
        synthetic, gen_seconds = load_synthetic(Path(args.load_synthetic), real)
        print(f"loaded {len(synthetic)} synthetic images from {args.load_synthetic}")
    else:
        try:
            t0 = time.perf_counter()
            sources = train_docs
            if args.sources == "kept":
                keep = scarce_documents(train_docs, args.real_fraction, args.seed)
                sources = [train_docs[k] for k in keep]
            if args.dataset == "hc18":
                sources = hc18_with_sector(sources)
            if args.variants:
                sources = deformed(sources, args.variants, args.seed)
            print(f"generating from {len(sources)} label maps"
                  + (f" ({args.variants} deformed variants each)" if args.variants else ""),
                  flush=True)
            synthetic, gen_seconds = generate(sources, args.backend, args.seed, args.gen_size,
                                              args.model_dir, args.gen_steps,
                                              args.gen_guidance)
            if args.dataset == "hc18":
                synthetic = head_only(synthetic, real[0].schema.sector_id)
            if args.save_synthetic:
                save_synthetic(Path(args.save_synthetic), synthetic, gen_seconds)
            print(f"generated {len(synthetic)} with '{args.backend}' in "
                  f"{time.perf_counter() - t0:.0f} s, median {statistics.median(gen_seconds):.3f} s/image")
        except (ImportError, ModuleNotFoundError) as exc:
            print(f"skipped: backend '{args.backend}' is not available ({exc})")
            return 0
        except UsgenError as exc:  # e.g. no trained model in --model-dir
            print(f"skipped: {exc}")
            return 0

    step_ms = unet_step_ms(args.size, 8)
    print(f"U-Net step at {args.size}² batch 8: {step_ms:.0f} ms (median of 6)")
    config = EvalConfig(size=args.size, epochs=args.epochs, realism_epochs=args.realism_epochs,
                        realism_size=args.realism_size,
                        seed=args.seed, dev_split=tuple(dev), threads=args.threads,
                        seg_repeats=args.repeats, steps=args.steps,
                        real_fraction=args.real_fraction,
                        fid=not args.no_fid)
    last = [0.0]

    def show(p: Progress) -> None:
        if time.perf_counter() - last[0] > 15:
            last[0] = time.perf_counter()
            print(f"  [{p.fraction:4.0%}] {p.message}", flush=True)

    t0 = time.perf_counter()
    m = evaluate(real, synthetic, Path(args.out), config, show)
    wall = time.perf_counter() - t0
    h = m["headline"]
    summary = {
        "machine": "2-core CPU, no GPU, torch " + m["environment"]["torch"],
        "code": code_version(),
        "size": args.size, "epochs": args.epochs, "steps_per_arm": m["budget"]["steps_per_arm"],
        "backend": ("positive control (half of real train as synthetic)" if args.positive_control
                    else "control (copies of real train)" if args.control
                    else (args.synthetic or args.load_synthetic or args.backend)),
        "real_fraction": args.real_fraction, "repeats": args.repeats,
        "sources": args.sources, "variants": args.variants,
        "sizes": m["sizes"], "headline": h, "timing_s": m["timing_s"], "wall_s": round(wall, 1),
        "unet_step_ms": round(step_ms, 1),
        "generate_s_per_image_median": (round(statistics.median(gen_seconds), 4)
                                        if gen_seconds else None),
        "realism": {k: m["realism"].get(k) for k in ("auc", "pooled_auc", "fold_auc", "n_per_class")},
        "fid": {k: v for k, v in m["fid"].items() if not isinstance(v, list | dict)},
        "mask_fidelity": m["mask_fidelity"].get("mean"),
        "segmentation": {a: {"mean": d["mean"], "global": d["global"], "seconds": d["seconds"]}
                         for a, d in m["segmentation"].items()},
    }
    (Path(args.out) / "bench_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ro = h["dice_real_only"] or float("nan")  # a tiny smoke run can score 0
    print(f"\nDice on dev split: real only {ro:.3f} | real + synthetic "
          f"{h['dice_real_plus_synthetic']:.3f} ({h['dice_real_plus_synthetic'] / ro:.2f}x) | "
          f"synthetic only {h['dice_synthetic_only']:.3f} ({h['dice_synthetic_only'] / ro:.2f}x)")
    print(f"Report: {Path(args.out) / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
