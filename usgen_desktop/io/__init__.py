"""Readers and writers: images, masks, label files, dataset layouts and the project store.

Imports neither Qt nor torch (a test enforces it).
"""

from usgen_desktop.io.datasets import ImportResult, open_dataset
from usgen_desktop.io.images import IMAGE_SUFFIXES, is_image_file, read_array, read_image
from usgen_desktop.io.masks import (
    fill_outline,
    mask_to_ids,
    read_itksnap_labels,
    read_mask,
    write_itksnap_labels,
)
from usgen_desktop.io.metaimage import read_metaimage, write_metaimage
from usgen_desktop.io.project import Project, default_projects_dir, is_project

__all__ = [
    "IMAGE_SUFFIXES",
    "ImportResult",
    "Project",
    "default_projects_dir",
    "fill_outline",
    "is_image_file",
    "is_project",
    "mask_to_ids",
    "open_dataset",
    "read_array",
    "read_image",
    "read_itksnap_labels",
    "read_mask",
    "read_metaimage",
    "write_itksnap_labels",
    "write_metaimage",
]
