"""Does synthetic data help? Downstream Dice, realism AUC, FID/KID, mask fidelity, speckle
statistics and an HTML report.

Each metric is its own module and usable alone; :func:`evaluate` runs them all. Nothing here
imports torch at module level: networks are built inside the functions that train them.
"""

from __future__ import annotations

from usgen_desktop.evaluation.config import EvalConfig

__all__ = ["EvalConfig", "evaluate"]


def evaluate(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export
    """See :func:`usgen_desktop.evaluation.evaluate.evaluate`."""
    from usgen_desktop.evaluation.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
