"""`usgen selftest`: check this installation end to end, headless.

    usgen selftest [--out DIR] [--gui] [--demo DIR]

Opens the demo project into a temporary project, generates two images with the default
backend, exports them and reads them back; one line per step with its time. Exit 0 when all
pass, 1 with one sentence when a step fails. It is the CI smoke test of a source install and
what packaging/smoke_test.sh runs on the built app (as ``usgen-desktop --selftest``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "selftest", help="check the installation: demo project, generate, export",
        description="Open the demo project, generate two images with the default backend, "
                    "export them and check the files; exit 0 when everything works.",
    )
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="keep the test project and export in DIR (default: a temporary folder)")
    p.add_argument("--gui", action="store_true",
                   help="also open the main window (needs a display or QT_QPA_PLATFORM)")
    p.add_argument("--demo", type=Path, metavar="DIR",
                   help="a dataset folder to use instead of the shipped demo project")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usgen_desktop.selftest import run_selftest

    return run_selftest(out_dir=args.out, gui=bool(args.gui), demo_dir=args.demo)
