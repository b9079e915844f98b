"""Fusion methods: each in a folder or a file of its own, one interface, one registry (as mergekit's merge methods).

A method reads the job's plans and the loaded target model and returns the fused adapter's tensors,
its config and its part of ``fusion_report.json``; ``hf_fuse.run`` does everything around it (pre-flight
checks, loading, the report, the atomic export).  A method is a :class:`FusionMethod` subclass in a module or a package
of this package, decorated with :func:`register`: every module and package here is imported, so adding a method is
adding one file or folder.  ``hf-fuse --help`` lists them with their one-line help.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import METHODS, FuseContext, FusionMethod, MethodResult, get_method, register

_NOT_METHODS = {"base", "sources"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_METHODS:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "FuseContext", "FusionMethod", "MethodResult", "get_method", "register"]
