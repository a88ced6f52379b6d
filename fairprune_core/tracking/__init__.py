"""Tracking: the :class:`Tracker` interface, a null tracker, and the MLflow implementation.

MLflow is imported only by :mod:`~fairprune_core.tracking.mlflow_store`, and only inside its
functions: importing this package imports no MLflow.
"""

from __future__ import annotations

from .base import LoggedModel, NullTracker, Tracker, TrackingError
from .mlflow_store import (
    MlflowTracker,
    check_tracking_uri,
    is_remote,
    load_pruned_model,
    log_pruned_model,
    logged_model_bytes,
    resolve_tracking_uri,
)

__all__ = [
    "LoggedModel",
    "MlflowTracker",
    "NullTracker",
    "Tracker",
    "TrackingError",
    "check_tracking_uri",
    "is_remote",
    "load_pruned_model",
    "log_pruned_model",
    "logged_model_bytes",
    "resolve_tracking_uri",
]
