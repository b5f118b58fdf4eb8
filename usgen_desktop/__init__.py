"""USGen Desktop: paint ultrasound label maps, generate matching images, export datasets.

Importing this package is cheap: it loads neither Qt nor torch (see tests/unit/test_imports.py).
"""

__version__ = "0.1.0"
