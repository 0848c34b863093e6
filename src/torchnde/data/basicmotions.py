"""UEA BasicMotions (bundled): 80 recordings of a smart watch's 3-D accelerometer and gyroscope
(10 Hz for 10 s) during four activities: standing, running, walking, badminton.

The file ``basicmotions.npz`` is made by ``scripts/make_basicmotions.py`` from the ``.ts``
files that sktime (BSD 3-Clause) ships; train and test splits are the archive's (40 each, 10
per class).

Reference: A. Bagnall et al., "The UEA multivariate time series classification archive, 2018",
arXiv:1811.00075.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

__all__ = ["load_basicmotions"]


def load_basicmotions() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``x_train (40, 100, 6)``, ``y_train (40,)``, ``x_test``, ``y_test`` (float32, int64;
    time along dimension 1) and the class names, indexed by label."""
    with resources.files(__package__).joinpath("basicmotions.npz").open("rb") as f:
        with np.load(f) as d:
            arrays = [torch.from_numpy(d[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
            classes = [str(c) for c in d["classes"]]
    return arrays[0], arrays[1], arrays[2], arrays[3], classes
