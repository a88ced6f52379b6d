"""FairPrune: fairness through pruning for dermatology classifiers (MICCAI 2022), at cluster scale.

Modules, one concept each:

* :mod:`fairprune_core.datasets` - Fitzpatrick17k, ISIC 2019 and synthetic data behind ``load_dataset``
* :mod:`fairprune_core.models` - the built-in VGG-11 and any torchvision classifier, by name
* :mod:`fairprune_core.training` - vanilla pre-training; :mod:`~fairprune_core.checkpoint` its files
* :mod:`fairprune_core.metrics` - Eopp0/Eopp1/Eodd, per-group P/R/F1, bootstrap intervals
* :mod:`fairprune_core.curvature` - curvature diagonals for any classifier (exact GGN, mc, fisher,
  Hutchinson's Hessian), in this process or on a pool of Ray actors
* :mod:`fairprune_core.pruning` - FairPrune and OBD
* :mod:`fairprune_core.sweep` - the Optuna/Ray Tune Pareto sweep; :mod:`~fairprune_core.tracking` MLflow
* :mod:`fairprune_core.pareto` - Pareto front and hypervolume

Importing the package imports none of Ray, MLflow or Optuna.
"""

__version__ = "0.1.0"
