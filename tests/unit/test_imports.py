"""The Qt-free, torch-free contract: importing core, io, export and the CLI entry stays light."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("PySide6", "torch", "diffusers", "transformers")

_PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))
"""


def _loaded_heavy(module: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_io_export_and_cli_import_no_qt_or_torch():
    modules = "usgen_desktop.core, usgen_desktop.core.document, usgen_desktop.core.lesions, " \
              "usgen_desktop.io, " \
              "usgen_desktop.export, usgen_desktop.cli.main, usgen_desktop.cli.export_cmd"
    assert _loaded_heavy(modules) == []


def test_building_the_cli_parser_stays_light():
    # `usgen --help` imports every sub-command module: none may pull in Qt or torch.
    probe = "usgen_desktop.cli.main; usgen_desktop.cli.main.build_parser()"
    assert _loaded_heavy(probe) == []
