"""`usgen generate`: synthetic images for every label map of a dataset, sharded and resumable.

Items: label map ``m`` (in the dataset's order) and repeat ``r`` make item ``i = m * K + r``
(``K`` = ``--per-mask``); its seed is ``seed_for(--seed, i)``. ``--shard I/N`` (I from 1 to N)
makes the items with ``i % N == I - 1``, so the N shards are disjoint, independent and together
make exactly the unsharded run, file for file and byte for byte.

Output: ``images/<case>.png`` + ``masks/<case>.png`` (``folder``) or nnU-Net v2
``imagesTr/<case>_0000.png`` + ``labelsTr/<case>.png`` + ``dataset.json`` (``nnunet``), and one
``manifest.jsonl`` line per pair with its provenance. Each pair is written under temporary names
and renamed, and its manifest line goes in last; a run started again on the same folder skips
the items whose files and line exist, so an interrupted run resumes where it stopped. (The pairs
are written here rather than by ``usgen_desktop.export``, whose ``export_pairs`` takes finished
documents in one call and cannot append pair by pair while a generation runs.)

``--add-lesion CLASS`` (a proposed lesion on every normal scan, inpainted) and ``--inpaint``
(painted regions regenerated) keep the source images; ``cli/inpaint_plan.py`` makes their
label maps and regions, and each manifest line gains an ``inpaint`` entry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from usgen_desktop.cli.argtypes import float_range, int_range

RUN_FILE = "generate.json"  # what the run in this folder is, so a resume cannot mix two runs
MANIFEST = "manifest.jsonl"
FORMATS = ("folder", "nnunet")
AUTO = "auto"  # --backend default: the shipped model for the dataset's schema, else speckle


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate synthetic images for the label maps of a dataset",
        description="Generate K synthetic images per label map with a backend (speckle needs "
        "no model; auto, the default, uses the shipped diffusion model made for the dataset's "
        "label schema when there is one, else speckle), writing image/mask pairs and "
        "manifest.jsonl. Shards (--shard I/N take the items i with i % N == I-1) are "
        "independent; a run started again resumes.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--masks", metavar="DATASET", help="dataset folder with label maps")
    src.add_argument("--demo", action="store_true",
                     help="use the demo label maps shipped with USGen (BUSI + HC18)")
    p.add_argument("--backend", default=AUTO,
                   help="auto (default: the shipped sdm model for the dataset's label schema "
                   "when there is one, else speckle), speckle, sdm or controlnet")
    p.add_argument("--model", metavar="DIR",
                   help="model folder (sdm, controlnet; with --backend auto it means sdm)")
    p.add_argument("--per-mask", "--count", dest="per_mask", type=int_range(1, 100000), default=1,
                   metavar="K", help="images per label map (per normal scan with --add-lesion)")
    p.add_argument("--seed", type=int_range(0, 2**31 - 1), default=0, metavar="S",
                   help="base seed (default 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--format", default="folder", help="folder (default) or nnunet")
    p.add_argument("--shard", default=None, metavar="I/N", help="make only shard I of N")
    p.add_argument("--steps", type=int_range(1, 1000), default=None,
                   help="sampler steps (diffusion backends)")
    p.add_argument("--guidance", type=float_range(0, 100), default=None,
                   help="classifier-free guidance (default: the model's recommendation, else 1)")
    p.add_argument("--size", default=None, metavar="HxW", help="resize label maps first")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="CPU threads (default: the cores no other job is busy on)")
    p.add_argument("--class", dest="klass", default=None, metavar="C",
                   help="class for every label map (default: each map's own class)")
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="text prompt for every image (controlnet backend; default: the label "
                   "schema's prompt for each class, else a built-in class prompt)")
    p.add_argument("--strength", type=float, default=None, metavar="S",
                   help="img2img refinement strength 0-1 after the first pass (controlnet "
                   "backend; default 0.3, 0: no refinement)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="backend setting, e.g. frequency_mhz=5 or dynamic_range_db=50; "
                   "controlnet: controlnet_dir, lora, ti_token, ti_embedding, strength, "
                   "low_memory, resolution, negative")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    change = p.add_mutually_exclusive_group()
    change.add_argument("--add-lesion", metavar="CLASS", default=None,
                        help="add a proposed lesion of CLASS to every normal scan (an image "
                        "with an empty mask) and inpaint it (sdm), writing the new image and "
                        "mask; --count K lesions per scan")
    change.add_argument("--inpaint", action="store_true",
                        help="regenerate only the labelled region of each source image (sdm), "
                        "keeping the rest")
    p.add_argument("--margin", type=int, default=6, metavar="PX",
                   help="with --add-lesion or --inpaint: how far around the region the image "
                   "may change, to blend in (default 6)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the shards as Ray tasks (needs the ray extra): on a local Ray "
                   "instance, or the cluster at ADDRESS (auto, ray://host:10001); the output "
                   "folder must be shared by every node")
    p.add_argument("--shards", type=int, default=None, metavar="N",
                   help="with --ray: how many shards (default: one per GPU of the cluster, "
                   "else one per CPU)")
    p.set_defaults(func=run)


# -- argument parsing ------------------------------------------------------------------------
def _threads(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 1024, not '{text}'")
    return n


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3); None -> (1, 1)."""
    from usgen_desktop.errors import UsgenError

    if not text:
        return 1, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsgenError(f"--shard must look like 2/5, not '{text}'.") from None
    if n < 1 or not 1 <= i <= n:
        raise UsgenError(f"--shard {text}: the shard number must lie between 1 and {max(n, 1)}.")
    return i, n


def parse_size(text: str | None) -> tuple[int, int] | None:
    from usgen_desktop.errors import UsgenError

    if not text:
        return None
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UsgenError(f"--size must look like 256x256 (height x width), not '{text}'.") from None
    if not (8 <= h <= 8192 and 8 <= w <= 8192):
        raise UsgenError("--size must be between 8 and 8192 pixels on each side.")
    return h, w


def parse_params(items: list[str]) -> dict[str, Any]:
    from usgen_desktop.errors import UsgenError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsgenError(f"--param must look like KEY=VALUE, not '{item}'.")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def shard_items(total: int, shard: tuple[int, int]) -> list[int]:
    """The item indices of shard (I, N): ``i % N == I - 1``."""
    i, n = shard
    return [k for k in range(total) if k % n == i - 1]


# -- the run ---------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.synthesis.request import BACKENDS

    if args.backend != AUTO and args.backend not in BACKENDS:
        raise UsgenError(f"Unknown backend '{args.backend}' (choose one of {AUTO}, "
                         f"{', '.join(BACKENDS)}).")
    if args.format not in FORMATS:
        raise UsgenError(f"Unknown format '{args.format}' (choose folder or nnunet).")
    if args.per_mask < 1:
        raise UsgenError("--per-mask must be at least 1.")
    if args.add_lesion or args.inpaint:
        what = "--add-lesion" if args.add_lesion else "--inpaint"
        if args.backend not in (AUTO, "sdm"):
            raise UsgenError(f"{what} inpaints with the sdm backend, not '{args.backend}'.")
        if args.size:
            raise UsgenError(f"{what} keeps the source images, so it cannot take --size.")
        if args.demo:
            raise UsgenError(f"{what} needs a dataset of images (--masks DATASET), not --demo.")
        if not 0 <= args.margin <= 256:
            raise UsgenError("--margin must lie between 0 and 256 pixels.")
    shard = parse_shard(args.shard)
    size = parse_size(args.size)
    params = parse_params(args.param)
    out = Path(args.out).expanduser()
    if args.demo:
        from usgen_desktop.paths import resources_dir

        demo = resources_dir() / "demo"
        sources = [(demo, out / "busi"), (demo / "hc18", out / "hc18")]
        sources = [(s, o) for s, o in sources if s.is_dir()]
        if not sources:
            raise UsgenError(f"The demo label maps are missing from '{demo}'.")
    else:
        sources = [(Path(args.masks).expanduser(), out)]
    if getattr(args, "ray", None) is not None:
        if args.shard:
            raise UsgenError("--ray makes the shards itself; leave out --shard.")
        if args.shards is not None and args.shards < 1:
            raise UsgenError("--shards must be at least 1.")
        from usgen_desktop.cli.generate_ray import run_ray

        return run_ray(sources, args, size, params)
    for src, dst in sources:
        generate_dataset(src, dst, args, shard, size, params)
    return 0


def generate_dataset(masks: Path, out: Path, args: argparse.Namespace, shard: tuple[int, int],
                     size: tuple[int, int] | None, params: dict[str, Any]) -> int:
    """Generate the items of ``shard`` for the dataset at ``masks`` into ``out``; returns how
    many pairs this call wrote."""
    from usgen_desktop.core.tasks import CancelToken, Progress
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.export.layouts import LAYOUTS, LabelMapping, case_ids, dataset_folder
    from usgen_desktop.io import open_dataset
    from usgen_desktop.synthesis.request import GenerationRequest
    from usgen_desktop.synthesis.request import run as run_request

    found = open_dataset(masks)
    docs = [d for d in found.documents if d.labels is not None]
    if not docs:
        raise UsgenError(f"'{masks}' holds no label maps to generate from.")
    schema = found.schema
    names = [d.name for d in docs]
    classes = [args.klass or d.tags.get("class") for d in docs]
    plan = _inpaint_plan(args, docs, schema, classes)
    backend, model_dir = choose_backend("sdm" if plan is not None else args.backend,
                                        args.model, schema, masks)
    if backend == "sdm" and not model_dir:
        from usgen_desktop.synthesis.request import default_sdm_model

        default = default_sdm_model(schema)  # the one made for these labels, else sdm-default
        model_dir = str(default) if default is not None else None
    if model_dir and not Path(model_dir).expanduser().is_dir():
        raise UsgenError(f"The model folder '{model_dir}' does not exist.")

    from usgen_desktop.synthesis.request import model_recommendations

    rec = model_recommendations(model_dir) if backend != "speckle" else {}
    default_steps = 1 if backend == "speckle" else int(rec.get("steps", 25))
    steps = args.steps if args.steps is not None else default_steps
    # recorded as used, so a resumed run compares like with like; per dataset, since --demo's
    # two datasets may get different backends
    guidance = args.guidance if args.guidance is not None else float(rec.get("guidance", 1.0))
    prompt, strength = text_options(args, backend, params)
    request = GenerationRequest(
        label_maps=[d.labels for d in docs], schema=schema, backend=backend,
        model_dir=model_dir, classes=classes, seed=args.seed, steps=steps,
        guidance=guidance, size=size, count=args.per_mask, device=args.device,
        params=params, names=names, prompt=prompt, strength=strength, threads=args.threads,
    )
    if plan is not None:  # the source images kept, the regions regenerated
        request.label_maps, request.count = plan.label_maps, plan.count
        request.init_images, request.inpaint_masks = plan.init_images, plan.inpaint_masks
        request.classes, request.names = plan.classes, [d.name for d in plan.docs]
    request.validate()

    layout = LAYOUTS[args.format]
    target = dataset_folder(out, args.format, "USGenSynthetic", 501)
    # Everything that decides the images, but not the shard: shards share one folder.
    signature = {
        "masks": str(masks.resolve()), "names": names, "backend": backend,
        "model_dir": model_dir, "per_mask": args.per_mask, "seed": args.seed, "steps": steps,
        "guidance": guidance, "size": list(size) if size else None, "classes": classes,
        "params": params, "format": args.format,
        **({"prompt": prompt, "strength": strength} if backend == "controlnet" else {}),
    }
    if plan is not None:
        signature.update(add_lesion=args.add_lesion, inpaint=bool(args.inpaint),
                         margin=args.margin)
    _claim_folder(target, signature)
    # Label ids are remapped for nnU-Net from every map (not this shard's), so shards agree.
    used = {int(i) for lm in request.label_maps for i in lm.ids()}
    mapping = LabelMapping.build(schema, used, consecutive=layout.remap)
    map_cases = case_ids(names)
    total = request.total
    _drop_torn_line(target / MANIFEST)
    done = _finished_items(target, layout)
    todo = [i for i in shard_items(total, shard) if i not in done]
    request.items = todo
    if not todo:
        _write_description(target, args.format, mapping, schema, layout)
        print(f"usgen: nothing to do in '{target}': all {len(shard_items(total, shard))} "
              "items of this shard are finished.", file=sys.stderr)
        return 0

    # The bar and the folder's run file appear only once the backend has loaded and made
    # something: a run that fails to start (no model, bad setting) leaves the folder as it was.
    bar: Any = None
    written = 0

    def progress(p: Progress) -> None:
        nonlocal bar
        if bar is None and not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=p.total, desc=f"generate {masks.name}", unit="step",
                       file=sys.stderr, dynamic_ncols=True)
        if bar is not None and p.total:
            bar.total = p.total
            bar.n = p.done
            bar.refresh()

    def on_result(res: Any) -> None:
        nonlocal written
        if written == 0:
            _claim_folder(target, signature, write=True)
        if plan is not None:
            m, case = plan.case(res.index)
            _write_pair(target, layout, case, res, mapping, plan.docs[m], schema,
                        extra={"inpaint": plan.records[m]})
        else:
            m, r = divmod(res.index, args.per_mask)
            case = f"{map_cases[m]}_{r:03d}"
            _write_pair(target, layout, case, res, mapping, docs[m], schema)
        written += 1

    from usgen_desktop.synthesis.devices import oom_as_user_error

    cancel = CancelToken()
    try:
        # A GPU out of memory ends the run with advice; the pairs finished so far stay.
        with oom_as_user_error(args.device if args.device != "auto" else "cuda"):
            run_request(request, progress, cancel, on_result=on_result)
    finally:
        if bar is not None:
            bar.close()
        if written:
            _write_description(target, args.format, mapping, schema, layout)
    print(f"usgen: wrote {written} pairs to '{target}' ({len(done)} were already there).",
          file=sys.stderr)
    return written


def text_options(args: argparse.Namespace, backend: str,
                 params: dict[str, Any]) -> tuple[str | None, float]:
    """(prompt, strength) for the request: ``--prompt``/``--strength`` are for the controlnet
    backend only (refused elsewhere rather than ignored); ``--param strength`` is the same
    setting, so the two must agree."""
    from usgen_desktop.errors import UsgenError

    prompt = getattr(args, "prompt", None)
    strength = getattr(args, "strength", None)
    if backend != "controlnet":
        for flag, value in (("--prompt", prompt), ("--strength", strength)):
            if value is not None:
                raise UsgenError(f"{flag} applies to the controlnet backend only, not {backend}.")
        return None, 0.3
    if strength is not None and "strength" in params:
        try:
            same = float(params["strength"]) == strength
        except (TypeError, ValueError):
            same = False
        if not same:
            raise UsgenError("--strength and --param strength disagree; give one of them.")
    if strength is None:
        strength = 0.3
        if "strength" in params:
            try:
                strength = float(params["strength"])
            except (TypeError, ValueError):
                raise UsgenError(
                    f"strength must be a number from 0 to 1, not '{params['strength']}'."
                ) from None
    if not 0.0 <= strength <= 1.0:
        raise UsgenError(f"--strength must lie between 0 and 1, not {strength}.")
    return (prompt.strip() or None) if prompt else None, float(strength)


def choose_backend(backend: str, model: str | None, schema: Any,
                   masks: Path) -> tuple[str, str | None]:
    """(backend, model folder) for one dataset. ``auto``: sdm with ``model`` when given, else
    sdm with the shipped model made for ``schema`` when there is one, else speckle (one line
    on stderr says which, and how to choose the other). Any other backend is kept as given."""
    if backend != AUTO:
        return backend, model
    if model:
        return "sdm", model
    from usgen_desktop.synthesis.request import shipped_model_for

    shipped = shipped_model_for(schema)
    if shipped is not None:
        print(f"usgen: {masks.name}: using the shipped diffusion model '{shipped}' made for the "
              f"'{schema.name}' labels; --backend speckle uses the simulator instead.",
              file=sys.stderr)
        return "sdm", str(shipped)
    print(f"usgen: {masks.name}: no shipped model is made for the '{schema.name}' labels, so "
          "the speckle simulator (needs no model); --backend sdm --model DIR uses a model of "
          "your own.", file=sys.stderr)
    return "speckle", None


def _claim_folder(target: Path, signature: dict[str, Any], write: bool = False) -> None:
    """Check ``target`` is empty or holds this same run (to resume), never a different one;
    with ``write``, create it and record the run."""
    from usgen_desktop.errors import ExportError
    from usgen_desktop.io.atomic import dumps_json, write_text_atomic

    path = target / RUN_FILE
    if target.exists() and not target.is_dir():
        raise ExportError(f"--out '{target}' is a file, not a folder; choose a folder.")
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != json.loads(dumps_json(signature)):
            raise ExportError(
                f"'{target}' holds a different generation run; choose an empty folder or "
                "repeat that run's settings to resume it."
            )
        return
    if target.exists() and any(p for p in target.iterdir() if not p.name.startswith(".")):
        raise ExportError(f"'{target}' is not empty; choose an empty folder for the output.")
    if not write:
        return
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, dumps_json(signature))
    except OSError as exc:
        raise ExportError(f"Could not write to '{target}' ({exc.strerror or exc}).") from exc


def _drop_torn_line(path: Path) -> None:
    from usgen_desktop.errors import ExportError
    from usgen_desktop.io.jsonl import drop_torn_line

    try:
        drop_torn_line(path)
    except OSError as exc:
        raise ExportError(f"Could not repair '{path}' ({exc.strerror or exc}).") from exc


def _finished_items(target: Path, layout: Any) -> set[int]:
    """Items whose manifest line and both files exist (a torn last line is ignored)."""
    from usgen_desktop.io.jsonl import read_jsonl

    done: set[int] = set()
    unusable = 0
    for rec in read_jsonl(target / MANIFEST):
        image, label, item = rec.get("image"), rec.get("label"), rec.get("item")
        if not (isinstance(image, str) and isinstance(label, str) and isinstance(item, int)
                and not isinstance(item, bool) and "\0" not in image + label):
            unusable += 1  # made again: its files, if any, are written anew
            continue
        if (target / image).is_file() and (target / label).is_file():
            done.add(item)
    if unusable:
        print(f"usgen: {unusable} line{'s' if unusable > 1 else ''} of '{target / MANIFEST}' "
              "lack an item, image or label; skipped (those items are made again).",
              file=sys.stderr)
    return done


def _inpaint_plan(args: argparse.Namespace, docs: list, schema: Any,
                  classes: list[str | None]) -> Any:
    """The maps, source images and regions of --add-lesion or --inpaint (None otherwise)."""
    from usgen_desktop.cli.inpaint_plan import plan_add_lesion, plan_inpaint
    from usgen_desktop.export.layouts import case_ids

    if not (getattr(args, "add_lesion", None) or getattr(args, "inpaint", False)):
        return None
    cases = case_ids([d.name for d in docs])
    if args.add_lesion:
        return plan_add_lesion(docs, cases, schema, args.add_lesion, args.per_mask, args.seed,
                               args.margin)
    return plan_inpaint(docs, cases, schema, classes, args.per_mask, args.margin)


def _write_pair(target: Path, layout: Any, case: str, res: Any, mapping: Any, doc: Any,
                schema: Any, extra: dict[str, Any] | None = None) -> None:
    from usgen_desktop.errors import ExportError
    from usgen_desktop.io.atomic import dumps_json, write_png_pair_atomic
    from usgen_desktop.paths import inside

    image_path = inside(target, layout.image_rel(case), "A generated image")
    label_path = inside(target, layout.label_rel(case), "A generated label map")
    labels = res.label_map.data if mapping.is_identity else mapping.apply(res.label_map.data)
    rec = {
        "case": case,
        "item": res.index,
        "image": layout.image_rel(case),
        "label": layout.label_rel(case),
        "name": doc.name,
        "source": str(doc.image.source) if doc.image is not None and doc.image.source else None,
        "class": res.provenance.get("class"),
        "schema": schema.name,
        "label_mapping": {str(k): v for k, v in mapping.to_export.items()},
        "height": int(res.image.shape[0]),
        "width": int(res.image.shape[1]),
        "provenance": res.provenance,
        **(extra or {}),
    }
    try:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        write_png_pair_atomic(image_path, res.image, label_path, labels)
        # O_APPEND keeps lines of shards writing into one folder from interleaving.
        with open(target / MANIFEST, "a", encoding="utf-8") as f:
            f.write(dumps_json(rec, indent=None) + "\n")
    except OSError as exc:
        raise ExportError(
            f"Could not write '{image_path.name}' to '{target}' ({exc.strerror or exc}); "
            "finished pairs were kept."
        ) from exc


def _write_description(target: Path, fmt: str, mapping: Any, schema: Any, layout: Any) -> None:
    """dataset.json (nnU-Net) and the schema, from every finished pair in the folder."""
    from usgen_desktop.export.layouts import dataset_json
    from usgen_desktop.io.atomic import dumps_json, write_text_atomic
    from usgen_desktop.io.jsonl import read_jsonl

    cases = sorted({rec["case"] for rec in read_jsonl(target / MANIFEST) if "case" in rec})
    try:
        desc = dataset_json(fmt, "USGenSynthetic", mapping, cases, layout)
        if desc is not None:
            write_text_atomic(target / "dataset.json", dumps_json(desc))
        write_text_atomic(target / "usgen_schema.json",
                          mapping.schema_for_export(schema).to_json(), fsync=False)
    except OSError:
        pass  # the pairs and manifest are what matter; a description can be rewritten
