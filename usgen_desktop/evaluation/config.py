"""Settings of one evaluation run; every field is written into metrics.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EvalConfig:
    """What to measure and with which budget.

    Every segmentation arm (real only, real + synthetic, synthetic only) gets the same number
    of optimiser steps: ``epochs`` passes over the *real* training split at ``batch_size``,
    so an arm with more images does not also get more updates.
    """

    size: int = 128  # every image and label map is resized to size x size
    epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    test_fraction: float = 0.2  # of the real groups held out when no dev split is given
    group_column: str = "group"  # document tag that names near-duplicate groups
    dev_split: tuple[str, ...] | None = None  # names/groups/files of the held-out real docs
    steps: int | None = None  # an explicit step budget per arm instead of epochs
    # train on this fraction of the real training groups (per class): synthetic data is meant
    # for scarce real data, and a protocol with plenty of real images may not see its help
    real_fraction: float = 1.0
    seg_repeats: int = 1  # train every arm with this many seeds and average
    unet_base: int = 16  # channels of the first U-Net level (16 -> about 0.5M parameters)
    realism_folds: int = 5
    realism_epochs: int = 8
    realism_size: int | None = None  # None: same as size
    fid: bool = True
    kid_subset: int = 100
    speckle_dynamic_range_db: float = 60.0  # assumed log-compression to linearise pixels
    grid_samples: int = 6
    # realism at the images' own pixels (evaluation.fullsize): a critic on native crops and power
    # per octave, beside real images sent through the app's resize path to fullsize_base² and back
    fullsize: bool = True
    fullsize_crop: int = 128
    fullsize_base: int = 128
    threads: int | None = None  # torch threads; None keeps torch's default (1 on a busy box)

    def steps_per_arm(self, n_real_train: int) -> int:
        """The optimiser-step budget shared by every segmentation arm (``steps`` when set)."""
        if self.steps:
            return int(self.steps)
        per_epoch = max(1, -(-n_real_train // self.batch_size))
        return max(1, self.epochs * per_epoch)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dev_split"] = None if self.dev_split is None else len(self.dev_split)
        return d
