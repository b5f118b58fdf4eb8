"""Names from data never leave their folder: property-style tests of ``paths.safe_filename``,
``unique_filenames`` and ``inside``, then every writer (deform, sector detect, export, generate,
project save) fed many random hostile names must write only inside the folder the user chose."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from usgen_desktop.errors import UnsafePathError
from usgen_desktop.paths import MAX_NAME_BYTES, inside, safe_filename, unique_filenames

_PIECES = ["..", ".", "/", "\\", "\x00", "\n", "\t", ":", "*", "?", "<", ">", "|", '"', " ",
           "a", "Z", "9", "_", "-", "é", "日本", "🙂", "\u202e", "\ufeff", "CON", "nul", "x" * 90,
           "../", "/etc/", "~", "$HOME", "%s", "\ud800"]


def hostile_names(seed: int, n: int) -> list[object]:
    """Random names built from separators, dots, control characters, reserved device names,
    unicode (incl. a lone surrogate), very long runs, plus non-strings."""
    r = random.Random(seed)
    names: list[object] = ["", ".", "..", "/", "../../ESC", "/abs/ESC", "a\x00b", "x" * 400,
                           None, 12, 3.5, ["a"], {"k": "v"}]
    while len(names) < n:
        names.append("".join(r.choice(_PIECES) for _ in range(r.randint(1, 12))))
    return names[:n]


def _is_single_component(name: str) -> bool:
    return (bool(name) and name not in (".", "..") and not name.startswith(".")
            and not any(c in name for c in "/\\\x00") and all(c.isprintable() for c in name)
            and os.path.basename(name) == name)


@pytest.mark.parametrize("seed", range(4))
def test_safe_filename_is_one_component_inside_any_folder(tmp_path, seed):
    for name in hostile_names(seed, 500):
        safe = safe_filename(name)
        assert _is_single_component(safe), repr((name, safe))
        assert len(safe.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        assert inside(tmp_path, safe) == (tmp_path / safe).resolve()
        # room for "_v12.png" and a temporary name within a 255-byte file name
        (tmp_path / f"{safe}_v12.png").write_bytes(b"")
    assert all(p.parent == tmp_path for p in tmp_path.iterdir())


def test_ordinary_names_are_kept_and_duplicates_made_unique():
    for name in ("benign (10)", "IM_0001", "échographie cœur", "case-07.v2"):
        assert safe_filename(name) == name
    names = ["a", "A", "a", "../a", "/a", "", ""]
    got = unique_filenames(names)
    assert len({g.lower() for g in got}) == len(got)
    assert got[:3] == ["a", "A_2", "a_3"]
    long = unique_filenames(["y" * 300, "y" * 300 + "z"])
    assert long[0] != long[1] and all(len(g) <= MAX_NAME_BYTES for g in long)


def test_inside_refuses_every_way_out(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").mkdir()
    os.symlink(tmp_path, root / "link")
    for bad in ("../x", "sub/../../x", "/etc/passwd", str(tmp_path / "x"), "a\x00b",
                "link/x", "..", "sub/\n"):
        with pytest.raises(UnsafePathError):
            inside(root, bad)
    assert inside(root, "sub/x.png") == (root / "sub" / "x.png").resolve()
    assert inside(root, "./imagesTr/c0.png") == (root / "imagesTr" / "c0.png").resolve()


# -- every writer, fed hostile names -----------------------------------------------------------
def _snapshot(root: Path) -> set[str]:
    return {os.path.join(d, f) for d, ds, fs in os.walk(root) for f in fs + ds}


def _dataset(root: Path, names: list[object], images: bool) -> None:
    lines = []
    for i, name in enumerate(names):
        mask = np.zeros((32, 40), np.uint8)
        cv2.circle(mask, (20, 16), 6 + i % 4, 255, -1)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "masks" / f"m{i}.png"), mask)
        if images:
            (root / "images").mkdir(parents=True, exist_ok=True)
            img = np.full((32, 40), 90, np.uint8)
            img[mask > 0] = 30
            cv2.imwrite(str(root / "images" / f"m{i}.png"), img)
        lines.append(json.dumps({"case": f"m{i}", "name": name}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cli(*argv: object) -> int:
    from usgen_desktop.cli.main import main

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return main([str(a) for a in argv])


@pytest.mark.parametrize("seed", range(2))
def test_no_writer_leaves_its_output_folder(tmp_path, seed):
    world = tmp_path / "a" / "b" / "world"
    names = [n if not isinstance(n, str) else n.replace("/abs", str(tmp_path))
             for n in hostile_names(100 + seed, 24)]
    _dataset(world / "labels", names, images=False)
    _dataset(world / "pairs", names, images=True)
    outside_before = _snapshot(tmp_path)
    out = world / "out"
    n = len(names)

    assert _cli("deform", "--masks", world / "labels", "--out", out / "deform", "--n", "1",
                "-q") == 0
    assert len(list((out / "deform" / "masks").glob("*.png"))) == n
    assert _cli("sector", "detect", world / "pairs", "--out", out / "sector", "--no-overlay",
                "--labels-out", out / "sector_labels", "--sector-id", "9") == 0
    assert len(list((out / "sector").glob("*_sector.png"))) == n
    assert len(list((out / "sector_labels" / "masks").glob("*.png"))) == n
    for fmt in ("folder", "nnunet", "decathlon"):
        assert _cli("export", "--from", world / "pairs", "--out", out / f"export_{fmt}",
                    "--format", fmt, "--name", "../../" + str(names[5]), "-q") == 0
    assert _cli("generate", "--masks", world / "labels", "--out", out / "generate",
                "--backend", "speckle", "--no-progress") == 0
    assert len((out / "generate" / "manifest.jsonl").read_text().splitlines()) == n

    # A project whose uids and paths come from a hostile project.json, opened and saved.
    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.io import open_dataset
    from usgen_desktop.io.project import Project

    proj = Project.create(out / "proj", load_preset("busi"))
    proj.add(open_dataset(world / "pairs").documents)
    proj.save()
    meta = json.loads((out / "proj" / "project.json").read_text(encoding="utf-8"))
    for entry, name in zip(meta["documents"], names, strict=True):
        entry["uid"] = name if isinstance(name, str) else entry["uid"]
    (out / "proj" / "project.json").write_text(json.dumps(meta), encoding="utf-8")
    reopened = Project.open(out / "proj")
    for doc in reopened.documents:
        doc.labels.data[0, 0] = 1
        doc.revision += 1
    reopened.save()
    reopened.autosave()
    assert len(reopened.documents) == n

    new = _snapshot(tmp_path) - outside_before
    escaped = sorted(p for p in new if not Path(p).is_relative_to(out))
    assert not escaped, escaped[:5]
