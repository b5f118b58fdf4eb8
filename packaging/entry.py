"""Entry point of the packaged app (PyInstaller runs this file as ``usgen-desktop``).

    usgen-desktop                 the editor (first start: the demo project)
    usgen-desktop --selftest      check the installation and exit (0 = fine)
    usgen-desktop --cli ARGS...   the ``usgen`` command line, e.g. ``--cli generate --help``
"""

import sys

from usgen_desktop.offline import enforce_offline

# Before anything imports huggingface_hub / diffusers: they read these variables on import.
enforce_offline()

if len(sys.argv) > 1 and sys.argv[1] == "--cli":
    from usgen_desktop.cli.main import main as cli_main

    sys.argv = ["usgen", *sys.argv[2:]]
    raise SystemExit(cli_main(sys.argv[1:]))

from usgen_desktop.gui.app import main  # noqa: E402

raise SystemExit(main())
