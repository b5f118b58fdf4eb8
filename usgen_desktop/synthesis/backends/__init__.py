"""Generator backends, loaded by name through ``usgen_desktop.synthesis.request``."""
