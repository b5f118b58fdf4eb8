"""`usgen` entry point. Each sub-command lives in its own module with ``add_parser`` and ``run``.

Modules must import nothing heavy (torch, Qt) at module level: ``usgen --help`` stays instant.
Errors a user can cause (``UsgenError``) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from usgen_desktop import __version__
from usgen_desktop.errors import Cancelled, UsgenError

# name -> module under usgen_desktop.cli (each defines add_parser(subparsers) and run(args) -> int)
COMMANDS = ["export", "sector", "deform", "generate", "merge", "train", "evaluate", "assist",
            "selftest"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usgen", description="USGen Desktop command line: import, deform, generate, export."
    )
    parser.add_argument("--version", action="version", version=f"usgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"usgen_desktop.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"usgen_desktop.cli.{name}_cmd":
                continue  # sub-command not built yet
            raise
        module.add_parser(sub)
    return parser


def os_sentence(exc: OSError) -> str:
    """One sentence for a file-system error: what failed, on which file."""
    import errno

    where = f" ('{exc.filename}')" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"The disk is full{where}; the items finished so far were kept."
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"USGen may not write here{where} (permission denied); choose another folder."
    if exc.errno == errno.ENAMETOOLONG:
        return f"A file name is too long for the file system{where}."
    return f"A file could not be read or written{where}: {exc.strerror or exc}."


def main(argv: list[str] | None = None) -> int:
    from usgen_desktop.offline import enforce_offline

    enforce_offline()  # models load from local folders only; no library may reach the network
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"usgen: {exc}", file=sys.stderr)
        return 130
    except UsgenError as exc:
        hint = getattr(exc, "cli_hint", "")
        print(f"usgen: error: {exc}" + (f" {hint}" if hint else ""), file=sys.stderr)
        return 2
    except OSError as exc:
        # A write that failed where no command said it better (disk full, no permission).
        print(f"usgen: error: {os_sentence(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("usgen: error: there is not enough memory for this; try smaller images, fewer at "
              "a time, or a smaller --size.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("usgen: interrupted; finished items were kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
