"""`python -m usgen_desktop` starts the GUI."""

from usgen_desktop.gui.app import main

if __name__ == "__main__":
    raise SystemExit(main())
