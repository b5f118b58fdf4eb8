"""Dataset writers (folders, nnU-Net v2, Decathlon) with a manifest; atomic and resumable.

Imports neither Qt nor torch (a test enforces it).
"""

from usgen_desktop.export.layouts import FORMATS, LabelMapping, case_ids
from usgen_desktop.export.pairs import MANIFEST, ExportReport, export_pairs

__all__ = ["FORMATS", "MANIFEST", "ExportReport", "LabelMapping", "case_ids", "export_pairs"]
