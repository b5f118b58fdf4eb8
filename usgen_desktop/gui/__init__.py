"""The PySide6 editor: the only package that imports Qt. Start it with ``gui.app.main``."""
