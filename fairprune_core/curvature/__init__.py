"""Diagonal curvature of the loss per parameter (the h_ii of Eq. 1 and 4), for any classifier.

* :mod:`.hessian` - :func:`hessian_diagonal` and :func:`make_engine` (which implementation for which
  model); the BackPACK engine of the built-in VGG-11
* :mod:`.per_sample` - the same estimators for any architecture, from per-sample gradients
* :mod:`.hutchinson` - Hutchinson's estimate of the Hessian diagonal itself (smooth networks)
* :mod:`.base` - what every engine shares: settings, sums + counts, seeds, memory budget
* :mod:`.batches` - per-group curvature mini-batches, seeded per step
* :mod:`.backends` - who computes a step: this process; :mod:`.distributed` - a pool of Ray actors

Importing this package imports neither BackPACK nor Ray (each is imported where it is used).
"""

from __future__ import annotations

from .base import CurvatureConfig, DiagSums, Estimator
from .hessian import UnsupportedLayerError, hessian_diagonal, make_engine, smooth_layers

__all__ = [
    "CurvatureConfig",
    "DiagSums",
    "Estimator",
    "UnsupportedLayerError",
    "hessian_diagonal",
    "make_engine",
    "smooth_layers",
]
