"""Readers and writers: images, masks, label files, dataset layouts and the project store.

Imports neither Qt nor torch (a test enforces it).
"""

from usgen_desktop.io.project import Project, default_projects_dir, is_project

__all__ = ["Project", "default_projects_dir", "is_project"]
