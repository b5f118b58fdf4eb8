"""Train the shipped ``sdm`` models on the shared data: ``models/sdm-default`` (BUSI breast, the
default) and ``models/sdm-hc18`` (HC18 fetal head with its sector, ``--dataset hc18``).

    .venv/bin/python scripts/train_default.py --out /work/ckpt/sdm-default-run [--resume]
    .venv/bin/python scripts/train_default.py --out /work/ckpt/sdm-default-run --export models/sdm-default
    .venv/bin/python scripts/train_default.py --grid docs/images/sdm_grid_busi.png --model-dir models/sdm-default --grid-guidance 3
    .venv/bin/python scripts/train_default.py --dataset hc18 --out /work/ckpt/sdm-hc18-run [--resume]

HC18: the label maps get the fan as label 2 (``detect_sector`` on each image, ``apply_sector``:
head clipped to the fan, the rest of the fan "sector", outside 0), so the model learns the
scan geometry as well as the head; no classes; 20 % of subjects held out (a subject's second
and third scans stay with the first).

Why one model per dataset: the app's BUSI preset (0 breast tissue, 1 lesion) is what the evaluation measures,
and a combined BUSI + HC18 schema would need label remapping in the backend (HC18's id 1 is a
fetal head, BUSI's a lesion) and split a CPU-sized model's capacity over two anatomies.

The dev split is the one ``benchmarks/bench_eval.py`` uses (``group_split`` over BUSI
near-duplicate groups, 20 % within each class, seed 0), written to ``dev_split.txt`` in the run
folder and the exported model folder, so evaluation holds out exactly the images training never saw.
The run checkpoints often and resumes (``--resume``): the CPU is shared and sessions end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
DATASETS = {
    # name: (folder, classes, how the split is described)
    "busi": (SHARED / "busi", ["normal", "benign", "malignant"],
             "20 % of near-duplicate groups within each class"),
    "hc18": (SHARED / "hc18", None, "20 % of subjects"),
}
DATA = DATASETS["busi"][0]
CLASSES = DATASETS["busi"][1]
# the shipped model made from each dataset (its dev_split.txt / train_split.txt fix the split)
SHIPPED = {"busi": ROOT / "models" / "sdm-default", "hc18": ROOT / "models" / "sdm-hc18"}


def with_sector(docs, schema) -> None:
    """Give each label map the fan of its image (HC18): head clipped to it, the rest of the
    fan the schema's sector id, outside 0."""
    from usgen_desktop.core.sector import apply_sector, detect_sector

    for d in docs:
        fit = detect_sector(d.image.to_uint8(), schema.probe)
        d.labels = apply_sector(d.labels, fit.mask, schema.sector_id)


def load_split(data: Path, seed: int, dataset: str = "busi"):
    from usgen_desktop.evaluation.prepare import doc_group, group_split
    from usgen_desktop.io import open_dataset

    res = open_dataset(data)
    docs = res.documents
    if dataset == "hc18":
        with_sector(docs, res.schema)
    groups = [doc_group(d) for d in docs]
    strata = [d.tags.get("class") for d in docs] if DATASETS[dataset][1] else None
    train_idx, dev_idx = group_split(groups, 0.2, seed, strata=strata)
    return res.schema, docs, list(train_idx), list(dev_idx)


def training_maps(dataset: str, n: int, start: int = 0):
    """``n`` documents of the dataset's *training* split, evenly spread from index ``start``
    (the calibration scripts draw from these; the dev split stays unseen)."""
    _schema, docs, train, _dev = load_split(DATASETS[dataset][0], 0, dataset)
    step = max(1, len(train) // n)
    return [docs[i] for i in train][start::step][:n]


def mask_overlays(img, labels):
    """(image with its black boxes filled, label map with those pixels marked ignore, whether any
    were found): the boxes are then not part of what the model imitates."""
    from usgen_desktop.core.overlays import IGNORE_BIT, fill_overlays, screen_overlays

    mask = screen_overlays(img, region=labels > 0)
    if not mask.any():
        return img, labels, False
    lab = labels.copy()
    lab[mask] |= IGNORE_BIT
    return fill_overlays(img, mask), lab, True


def write_split(folder: Path, docs, train_idx, dev_idx, seed: int, dataset: str = "busi") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    how = DATASETS[dataset][2]
    head = (f"# {dataset.upper()} dev split: {how}, seed {seed} "
            "(usgen_desktop.evaluation.prepare.group_split); never seen in training\n")
    (folder / "dev_split.txt").write_text(head + "\n".join(docs[i].name for i in dev_idx) + "\n")
    (folder / "train_split.txt").write_text(
        f"# {dataset.upper()} images this sdm model was trained on\n"
        + "\n".join(docs[i].name for i in train_idx) + "\n")


def draw_grid(data: Path, model_dir: Path, png: Path, seed: int, steps: int, per_class: int = 3,
              guidance: float = 1.0, dataset: str = "busi", with_real: bool = False) -> int:
    """Rows = classes; each row holds ``per_class`` dev label maps: the image generated from
    it, then the same image with the lesion / head outline in red (HC18: the fan in blue).
    ``with_real`` puts the real dev image first instead: such a grid holds pixels of the
    shared data and must stay outside the repository (its README forbids committing them)."""
    import cv2
    import numpy as np

    from usgen_desktop.synthesis.request import GenerationRequest, run

    schema, docs, _, dev_idx = load_split(data, seed, dataset)
    classes = DATASETS[dataset][1]
    rng = np.random.default_rng(1)
    rows = []
    t0 = time.perf_counter()
    n = 0
    # one row per class; a dataset without classes gets two rows of its own
    row_keys = classes or [None, None]
    for r_i, klass in enumerate(row_keys):
        pool = [i for i in dev_idx if docs[i].tags.get("class") == klass] if klass else \
            dev_idx[r_i::len(row_keys)]
        pick = [pool[k] for k in sorted(rng.choice(len(pool), per_class, replace=False))]
        maps = [docs[i].labels for i in pick]
        res = run(GenerationRequest(maps, schema, backend="sdm", model_dir=str(model_dir),
                                    classes=[klass] * len(maps), steps=steps, seed=seed,
                                    guidance=guidance, device="cpu", size=(128, 128)))
        n += len(res)
        cells = []
        for i, r in zip(pick, res, strict=True):
            plain = cv2.cvtColor(r.image, cv2.COLOR_GRAY2BGR)
            fake = plain.copy()
            for ids, colour in (((1,), (0, 0, 255)), ((1, 2), (255, 140, 0))):
                if dataset != "hc18" and ids != (1,):
                    continue
                cnts, _ = cv2.findContours(np.isin(r.label_map.data, ids).astype(np.uint8),
                                           cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(fake, cnts, -1, colour, 1)
            first = plain
            if with_real:
                real = docs[i].image.to_uint8()
                real = cv2.resize(real if real.ndim == 2 else real[..., 0], (128, 128),
                                  interpolation=cv2.INTER_AREA)
                first = cv2.cvtColor(real, cv2.COLOR_GRAY2BGR)
            cells += [first, fake, np.full((128, 4, 3), 255, np.uint8)]
        row = np.concatenate(cells, axis=1)
        label = np.full((18, row.shape[1], 3), 255, np.uint8)
        what = "real | generated" if with_real else "generated | with its label outline"
        cv2.putText(label, f"{klass or dataset.upper()}: {what} (dev label maps, {steps} "
                    f"DPM++ steps, guidance {guidance:g})", (4, 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [label, row]
    png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png), np.concatenate(rows, axis=0))
    print(f"wrote {png}: {n} images in {time.perf_counter() - t0:.1f} s "
          f"({(time.perf_counter() - t0) / max(1, n):.2f} s/image incl. loading)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="busi")
    ap.add_argument("--data", default=None, help="default: ../shared/data/<dataset>")
    ap.add_argument("--out", default="/work/ckpt/sdm-default-run")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="1 is fastest on a shared 2-core machine: a second thread that the OS "
                    "preempts stalls every OpenMP barrier (measured 2.6 s/step vs 5-15 s)")
    ap.add_argument("--blocks", default="16,32,64,128")
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--sample-every", type=int, default=500)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                    help="start from this model's weights (fine-tuning) instead of random ones")
    ap.add_argument("--train-fraction", type=float, default=1.0,
                    help="train on this fraction of the training groups only: the same images "
                    "as bench_eval.py --real-fraction keeps for its scarce-data U-Nets")
    ap.add_argument("--mask-overlays", action="store_true",
                    help="leave black anonymisation boxes inside the fan out of the loss (HC18)")
    ap.add_argument("--export", default=None, metavar="MODEL_DIR",
                    help="only export the latest checkpoint's EMA weights to MODEL_DIR")
    ap.add_argument("--grid", default=None, metavar="PNG",
                    help="only draw real | generated pairs of held-out (dev) images per class "
                    "with the model in --model-dir")
    ap.add_argument("--model-dir", default=str(ROOT / "models" / "sdm-default"))
    ap.add_argument("--grid-steps", type=int, default=25)
    ap.add_argument("--grid-guidance", type=float, default=1.0)
    ap.add_argument("--with-real", action="store_true",
                    help="grid: real dev image beside each generated one (keep it out of the repo)")
    ap.add_argument("--recommend-guidance", type=float, default=3.0,
                    help="written into the exported model as its recommended guidance")
    args = ap.parse_args()

    data = Path(args.data) if args.data else DATASETS[args.dataset][0]
    classes = DATASETS[args.dataset][1]
    if not data.exists():
        print(f"skipped: {data} not found (the shared data is not on this machine)")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.grid:
        return draw_grid(data, Path(args.model_dir), Path(args.grid), args.seed, args.grid_steps,
                         guidance=args.grid_guidance, dataset=args.dataset,
                         with_real=args.with_real)
    if args.export:
        from usgen_desktop.synthesis.training.sdm import export_checkpoint, latest_checkpoint

        ck = latest_checkpoint(out)
        if ck is None:
            print(f"no checkpoint in {out}")
            return 1
        dest = export_checkpoint(ck, Path(args.export))
        meta = json.loads((dest / "usgen_model.json").read_text())
        # judged by eye on the held-out grid (train_default.py --grid): guidance 3 draws the
        # lesions dark and inside their outline, guidance 1 only hints at them
        meta["recommended"] = {"guidance": args.recommend_guidance, "steps": 25,
                               "sampler": "dpm++"}
        (dest / "usgen_model.json").write_text(json.dumps(meta, indent=2))
        for name in ("dev_split.txt", "train_split.txt"):
            if (out / name).is_file():
                (dest / name).write_text((out / name).read_text())
        print(f"exported {ck} -> {dest}")
        return 0

    from usgen_desktop.synthesis.training.sdm import TrainConfig, train_sdm

    t0 = time.perf_counter()
    schema, docs, train_idx, dev_idx = load_split(data, args.seed, args.dataset)
    if args.train_fraction < 1.0:
        from usgen_desktop.evaluation.prepare import scarce_documents

        keep = scarce_documents([docs[i] for i in train_idx], args.train_fraction, args.seed)
        train_idx = [train_idx[k] for k in keep]
    write_split(out, docs, train_idx, dev_idx, args.seed, args.dataset)
    triples = []
    n_masked = 0
    for i in train_idx:
        d = docs[i]
        img = d.image.to_uint8() if hasattr(d.image, "to_uint8") else d.image.data
        lab = d.labels
        if args.mask_overlays:
            img, lab, hit = mask_overlays(img, d.labels.data)
            n_masked += hit
        triples.append((img, lab, d.tags.get("class") if classes else None))
    if args.mask_overlays:
        print(f"screen overlays (black boxes) masked out of the loss in {n_masked} images")
    print(f"{args.dataset.upper()}: {len(docs)} images, train {len(train_idx)}, dev {len(dev_idx)}; "
          f"open {time.perf_counter() - t0:.1f} s", flush=True)
    cfg = TrainConfig(size=args.size, steps=args.steps, batch=args.batch, lr=args.lr,
                      ema_decay=0.995, checkpoint_every=args.checkpoint_every,
                      sample_every=args.sample_every, sample_steps=20, seed=args.seed,
                      keep_checkpoints=3,
                      block_out_channels=tuple(int(c) for c in args.blocks.split(",")),
                      layers_per_block=args.layers_per_block)
    last = [time.perf_counter()]

    def progress(p) -> None:
        pv = p.preview if isinstance(p.preview, dict) else {}
        if pv.get("loss") is not None and p.done % 10 == 0:
            now = time.perf_counter()
            print(f"step {p.done} loss {pv['loss']:.4f} {(now - last[0]) / 10:.2f} s/step",
                  flush=True)
            last[0] = now

    info = {"data": ("BUSI (Al-Dhabyani et al. 2020), dev split held out by group"
                     if args.dataset == "busi" else
                     "HC18 (van den Heuvel et al. 2018, CC BY 4.0) with detected sectors, "
                     "dev split held out by subject"),
            "script": "scripts/train_default.py"}
    res = train_sdm(triples, out, cfg, progress=progress, schema=schema, classes=classes,
                    resume=args.resume, info=info, init_from=args.init_from)
    print(json.dumps({"step": res.step, "seconds": res.seconds, "final_loss": res.final_loss}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
