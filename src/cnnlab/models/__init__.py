"""The zoo: one module per family; importing this package registers every model."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

# Building blocks the lectures use on their own (e.g. the 28x28x256 Inception module).
from cnnlab.models.googlenet import Inception, InceptionNaive  # noqa: E402

# The AnyNet design space and the RegNet parametrisation (Radosavovic et al. 2020).
from cnnlab.models.regnet import Stage, anynet, regnet_from_params, regnet_stages  # noqa: E402

__all__ = ["Inception", "InceptionNaive", "Stage", "anynet", "regnet_from_params",
           "regnet_stages"]
