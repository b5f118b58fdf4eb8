"""Render resources/icons/usgen.svg to the PNG sizes desktops ask for (and a Windows .ico).

Run with the project venv: ``.venv/bin/python packaging/make_icons.py``. Uses Qt's SVG renderer
(already a dependency) so no extra tool is needed; the PNGs are checked in, so a build does not
have to run this.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def render(svg: Path, size: int) -> QImage:
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def main() -> int:
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    svg = ICONS / "usgen.svg"
    for size in SIZES:
        out = ICONS / f"usgen-{size}.png"
        if not render(svg, size).save(str(out)):
            raise SystemExit(f"could not write {out}")
        print(out.relative_to(ICONS.parent.parent), out.stat().st_size, "bytes")
    # Windows wants a multi-size .ico for the executable; Pillow stores the sizes as PNG
    # inside it, which keeps the file a tenth of Qt's uncompressed BMP icon.
    from PIL import Image

    ico = ICONS / "usgen.ico"
    Image.open(ICONS / "usgen-256.png").save(
        ico, sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)]
    )
    print(ico.relative_to(ICONS.parent.parent), ico.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
