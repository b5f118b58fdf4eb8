"""Entry point of the packaged app (PyInstaller runs this file as ``usgen-desktop``).

    usgen-desktop                 the editor (first start: the demo project)
    usgen-desktop --selftest      check the installation and exit (0 = fine)
    usgen-desktop --cli ARGS...   the ``usgen`` command line, e.g. ``--cli generate --help``
"""

import sys
from pathlib import Path

from usgen_desktop.offline import enforce_offline

# Before anything imports huggingface_hub / diffusers: they read these variables on import.
enforce_offline()

# The CLI: `usgen-desktop --cli ...`, or the console executable `usgen.exe` that the Windows
# build adds beside the windowed one (a windowed exe has nowhere to print to).
_as_cli = Path(sys.executable).stem.lower() == "usgen"
if _as_cli or (len(sys.argv) > 1 and sys.argv[1] == "--cli"):
    from usgen_desktop.cli.main import main as cli_main

    args = sys.argv[1:] if _as_cli else sys.argv[2:]
    sys.argv = ["usgen", *args]
    raise SystemExit(cli_main(args))

from usgen_desktop.gui.app import main  # noqa: E402

raise SystemExit(main())
