"""Optional panels of the main window, each a module here with ``install(window)``.

At start-up the window imports ``usgen_desktop.gui.panels.<name>`` for every name below,
skips the ones not built, and calls ``install(window)``, which adds docks, menu actions or
canvas tools (``window.register_tool``). A panel that fails is reported, never fatal.
"""

PANELS = ["generate", "train", "variants", "sector", "lesion", "assist"]
