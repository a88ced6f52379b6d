"""Methods of the experiment engine, one module each, found through one registry.

A method turns the pre-trained model into the model it proposes (pruned, retrained, or as is):
see :class:`fairprune_core.methods.base.Method`. Adding a method is one new module here plus
one line in ``_REGISTRY``. The registry names its classes as strings, so listing the methods
(for ``--help``) imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from typing import Any

__all__ = ["METHOD_NAMES", "make_method", "method_class", "method_from_config", "method_label"]

# name -> "module:Class" (one line per method)
_REGISTRY: dict[str, str] = {
    "vanilla": "fairprune_core.methods.vanilla:Vanilla",
    "obd": "fairprune_core.methods.obd:OBD",
    "fairprune": "fairprune_core.methods.fairprune:FairPrune",
    "advconf": "fairprune_core.methods.advconf:AdvConf",
    "advrev": "fairprune_core.methods.advrev:AdvRev",
    "domainindep": "fairprune_core.methods.domainindep:DomainIndep",
}
METHOD_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def method_class(name: str) -> Any:
    """The :class:`~fairprune_core.methods.base.Method` subclass registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_method(name: str, **params: Any) -> Any:
    """An instance of method ``name`` with the given hyper-parameters (others take defaults)."""
    cls = method_class(name)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise ValueError(f"method {name!r} has no hyper-parameter {', '.join(unknown)}; it takes {takes}")
    return cls(**params)


def method_from_config(name: str, config: Any) -> Any:
    """Method ``name`` with every hyper-parameter that ``config`` (e.g. a PruneConfig) has a field for."""
    wanted = {f.name for f in fields(method_class(name))}
    return make_method(name, **{k: v for k, v in config.to_dict().items() if k in wanted})


def method_label(name: str) -> str:
    """How tables and figures name method ``name`` (e.g. ``OBD``, ``AdvConf``)."""
    label = method_class(name)().label()
    return label.split(" (")[0]
