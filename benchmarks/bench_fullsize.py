"""Realism and speed at the size the app writes (each label map's own), with and without the
texture refiner, on the shipped models.

    # realism on the dev split no training saw (needs ../shared/data; figures stay out of the repo)
    .venv/bin/python benchmarks/bench_fullsize.py realism --dataset busi --out /work/exp/fullsize
    .venv/bin/python benchmarks/bench_fullsize.py realism --dataset hc18 --out /work/exp/fullsize --limit 100
    # seconds per image at 320x256, 512², 1024², 1 and 2 threads, enlarge-only beside refined
    .venv/bin/python benchmarks/bench_fullsize.py speed --repeats 3

Realism: each dev label map is generated once by the base model (the shipped settings: 25
DPM++ steps, the model's recommended guidance unless --guidance says otherwise, the item's
seed); "before" is that image enlarged as the app did before the refiner (bicubic), "after" is
the same image refined, so the two differ only by the second stage. Both are measured against
the real dev images by ``evaluation.fullsize`` (a critic on native-resolution crops, power per
octave up to ¼–½ cycle per pixel), beside the control: real images sent through the app's
resize path. A figure puts real | before | after side by side per class, whole and as 1:1
crops; it holds dataset pixels, so it is written under --out only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from train_default import SHIPPED as MODELS  # noqa: E402


def dev_docs(dataset: str):
    """The dev split's documents (HC18 with its detected fan as label 2, as trained)."""
    from train_default import DATASETS, load_split

    schema, docs, _train, dev = load_split(DATASETS[dataset][0], 0, dataset)
    want = {ln.strip() for ln in (MODELS[dataset] / "dev_split.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")}
    picked = [docs[i] for i in dev]
    assert {d.name for d in picked} == want, "the dev split differs from the shipped model's"
    return schema, picked


def generate_pairs(model_dir: Path, docs, seed: int = 0, steps: int = 25, guidance: float = 2.0,
                   refiner_dir: Path | None = None, after_model: Path | None = None,
                   refine_steps: int | None = None, skip_before: bool = False):
    """(before, after, seconds_base, seconds_refine) per document, as the backend makes them.
    ``after_model``: the base model of the "after" images when it is a new one (each image is
    then drawn by both bases from the same seed)."""
    import shutil
    import tempfile

    import numpy as np

    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.synthesis.backends.sdm import (
        SdmBackend,
        model_to_uint8,
        resize_image,
        sample,
    )
    from usgen_desktop.synthesis.request import seed_for

    folder = model_dir
    tmp = None
    if refiner_dir is not None:  # a refiner not yet in the model folder: a temporary pairing
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name) / model_dir.name
        shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("refiner"))
        shutil.copytree(refiner_dir, folder / "refiner", ignore=shutil.ignore_patterns(
            "checkpoints", "samples"))
    backend = SdmBackend(folder, device="cpu", steps=steps)
    assert backend.refiner is not None, f"{folder} has no refiner"
    if refine_steps:
        backend.refiner[1].steps = int(refine_steps)
    new_base = SdmBackend(after_model, device="cpu", steps=steps, refine=False) \
        if after_model is not None else None
    unets = [backend.unet] if new_base is None else [backend.unet, new_base.unet]
    if skip_before:  # only the "after" images: the before ones would be the same as last run
        unets = unets[-1:]

    def base_image(d, s, unet):
        cond = backend.condition(d.labels)[None]
        x = sample(unet, backend.config, cond, [backend.config.class_index(d.tags.get("class"))],
                   [s], steps=steps, guidance=guidance)
        return resize_image(model_to_uint8(x[0]), d.labels.shape)

    out = []
    for i, d in enumerate(docs):
        s = seed_for(seed, i)
        t0 = time.perf_counter()
        bases = [base_image(d, s, u) for u in unets]
        before = bases[0]
        t1 = time.perf_counter()
        after = backend._refine(bases[-1], d.labels, s, SimpleNamespace(steps=steps),
                                lambda p: None, CancelToken())
        t2 = time.perf_counter()
        out.append((before, after, t1 - t0, t2 - t1))
        print(f"  {i + 1}/{len(docs)} {d.name}: base {t1 - t0:.1f} s, refine {t2 - t1:.1f} s",
              flush=True)
    if tmp is not None:
        tmp.cleanup()
    return out, np


def figure(path: Path, rows, crop: int = 128) -> None:
    """One row per example: real | before | after (whole, same height), then their crops from
    the same place shown 2x with nearest neighbours (every pixel visible). A row may hold
    generated images only (before | after) for a figure that can be committed."""
    import cv2
    import numpy as np

    lines = []
    for row in rows:
        h = 256
        whole = [cv2.resize(a, (int(a.shape[1] * h / a.shape[0]), h), interpolation=cv2.INTER_AREA)
                 for a in row]
        y = max(0, row[0].shape[0] // 2 - crop // 2)
        x = max(0, row[0].shape[1] // 2 - crop // 2)
        crops = [np.pad(a[y:y + crop, x:x + crop], ((0, max(0, crop - a[y:y + crop].shape[0])),
                                                    (0, max(0, crop - a[:, x:x + crop].shape[1]))))
                 for a in row]
        crops = [cv2.resize(c, (2 * crop, 2 * crop), interpolation=cv2.INTER_NEAREST)
                 for c in crops]  # shown 2x with nearest: every pixel visible
        gap = np.full((h, 6), 255, np.uint8)
        parts = []
        for a in whole + crops:
            parts += [a, gap]
        lines.append(np.concatenate(parts, axis=1))
        lines.append(np.full((6, lines[-1].shape[1]), 255, np.uint8))
    wmax = max(a.shape[1] for a in lines)
    lines = [np.pad(a, ((0, 0), (0, wmax - a.shape[1])), constant_values=255) for a in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(lines, axis=0))


def realism(args) -> int:
    import torch

    from usgen_desktop.evaluation.fullsize import fullsize_realism
    from usgen_desktop.evaluation.prepare import doc_group

    torch.set_num_threads(args.threads)
    schema, docs = dev_docs(args.dataset)
    if args.limit and len(docs) > args.limit:
        step = len(docs) / args.limit
        docs = [docs[int(i * step)] for i in range(args.limit)]
    print(f"{args.dataset}: {len(docs)} dev label maps", flush=True)
    from usgen_desktop.synthesis.request import model_recommendations

    guidance = args.guidance if args.guidance is not None else float(
        model_recommendations(str(MODELS[args.dataset])).get("guidance", 2.0))
    print(f"guidance {guidance}", flush=True)
    pairs, np = generate_pairs(MODELS[args.dataset], docs, guidance=guidance,
                               refiner_dir=args.refiner,
                               after_model=args.after_model, refine_steps=args.refine_steps,
                               skip_before=args.skip_before)
    real = [d.image.to_uint8() for d in docs]
    groups = [doc_group(d) for d in docs]
    classes = [d.tags.get("class") for d in docs] if args.dataset == "busi" else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"dataset": args.dataset, "n": len(docs), "model": MODELS[args.dataset].name,
              "threads": args.threads, "guidance": guidance,
              "seconds_base_median": statistics.median(p[2] for p in pairs),
              "seconds_refine_median": statistics.median(p[3] for p in pairs)}
    for name, k in (("before", 0), ("after", 1)):
        if name == "before" and args.skip_before:
            continue
        syn = [p[k] for p in pairs]
        t0 = time.time()
        result[name] = fullsize_realism(real, syn, groups, groups, classes, classes,
                                        control=(name == "before"), epochs=args.epochs)
        print(f"{name}: critic AUC {result[name]['critic'].get('auc')}, finest octave "
              f"{result[name]['octaves'].get('finest_band_ratio')} ({time.time() - t0:.0f} s)",
              flush=True)
    if args.dataset == "hc18":  # invented anonymisation boxes inside the fan
        from usgen_desktop.core.overlays import screen_overlays

        def boxes(images):
            return round(float(np.mean([screen_overlays(im, d.labels.data > 0).any()
                                        for im, d in zip(images, docs, strict=True)])), 4)

        result["images_with_a_black_box_in_the_fan"] = {
            "real": boxes(real),
            "before": None if args.skip_before else boxes([p[0] for p in pairs]),
            "after": boxes([p[1] for p in pairs])}
        print("black boxes in the fan:", result["images_with_a_black_box_in_the_fan"])
        if args.boxes_filled:
            # a diagnostic, not the goal's figure: real scans carry anonymisation boxes that the
            # model is trained not to draw, and a box edge is a cue a critic may use; here the
            # real images' boxes are filled as training fills them (core.overlays.fill_overlays)
            from usgen_desktop.core.overlays import fill_overlays

            filled = [fill_overlays(im, screen_overlays(im, d.labels.data > 0))
                      for im, d in zip(real, docs, strict=True)]
            t0 = time.time()
            res = fullsize_realism(filled, [p[1] for p in pairs], groups, groups, None, None,
                                   control=False, epochs=args.epochs)
            result["after_vs_real_boxes_filled"] = res
            print(f"after vs real with boxes filled: critic AUC {res['critic'].get('auc')} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    result["after_model"] = str(args.after_model) if args.after_model else "same base"
    result["refine_steps"] = args.refine_steps or "the refiner's default"
    (out_dir / f"fullsize_{args.dataset}.json").write_text(json.dumps(result, indent=1))
    # the figure: a few examples per class
    rows = []
    for c in (sorted(set(classes)) if classes else [None]):
        idx = [i for i in range(len(docs)) if (classes[i] if classes else None) == c][:3]
        rows += [(real[i], pairs[i][0], pairs[i][1]) for i in idx]
    figure(out_dir / f"fullsize_{args.dataset}.png", rows)
    # generated only (no dataset pixels): the one that may go into the repository
    figure(out_dir / f"fullsize_{args.dataset}_generated.png", [r[1:] for r in rows[::2]])
    before = result.get("before", {"critic": {}, "octaves": {}})
    ctl = before.get("control", {})
    print(json.dumps({"critic_before": before["critic"].get("auc"),
                      "critic_after": result["after"]["critic"].get("auc"),
                      "critic_control": ctl.get("critic", {}).get("auc"),
                      "octave_before": before["octaves"].get("ratio"),
                      "octave_after": result["after"]["octaves"].get("ratio"),
                      "octave_control": ctl.get("octaves", {}).get("ratio")}, indent=1))
    return 0


def speed(args) -> int:
    import numpy as np
    import torch

    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.synthesis.request import GenerationRequest, run

    model = MODELS["busi"]
    sizes = [(256, 320), (512, 512), (1024, 1024)]
    print(f"torch {torch.__version__}; model {model.name}; load average "
          f"{__import__('os').getloadavg()[0]:.2f}")
    rows = []
    for threads in (1, 2):
        for h, w in sizes:
            lab = np.zeros((h, w), np.uint8)
            lab[h // 3: h // 2, w // 3: 2 * w // 3] = 1
            for refine in ("0", "1"):
                req = GenerationRequest(
                    label_maps=[LabelMap(lab)], schema=load_preset("busi"), backend="sdm",
                    model_dir=str(model), classes=["benign"], steps=25, guidance=2.0,
                    device="cpu", threads=threads, params={"refine": refine})
                run(req)  # warm-up: loading, caches
                times = []
                for r in range(args.repeats):
                    req.seed = r + 1
                    t0 = time.perf_counter()
                    run(req)
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                rows.append((threads, f"{w}x{h}", "refined" if refine == "1" else "enlarge only",
                             med))
                print(f"threads {threads} {w}x{h} {'refined' if refine == '1' else 'enlarge'}: "
                      f"median {med:.2f} s ({', '.join(f'{t:.2f}' for t in times)})", flush=True)
    print("\n| threads | size | 128² + enlarge | refined | ratio |\n|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(f"| {a[0]} | {a[1]} | {a[3]:.2f} s | {b[3]:.2f} s | {b[3] / a[3]:.2f}x |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("realism")
    r.add_argument("--dataset", choices=sorted(MODELS), default="busi")
    r.add_argument("--out", required=True)
    r.add_argument("--limit", type=int, default=0)
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--after-model", type=Path, default=None,
                   help="a new base sdm model for the 'after' images (default: the same base)")
    r.add_argument("--refine-steps", type=int, default=None)
    r.add_argument("--guidance", type=float, default=None,
                   help="default: the model's recommended guidance, as the app uses")
    r.add_argument("--skip-before", action="store_true",
                   help="measure the 'after' images only (the 'before' ones depend on the base "
                   "model and seeds alone, so an earlier run's figures stand)")
    r.add_argument("--boxes-filled", action="store_true",
                   help="HC18: also the critic against real images with their anonymisation "
                   "boxes filled (a diagnostic)")
    r.add_argument("--refiner", type=Path, default=None,
                   help="a refiner folder to pair with the model (default: the model's refiner/)")
    s = sub.add_parser("speed")
    s.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    return realism(args) if args.cmd == "realism" else speed(args)


if __name__ == "__main__":
    raise SystemExit(main())
