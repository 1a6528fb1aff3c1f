"""torch.hub entry points: one per registered cnnlab model.

    model = torch.hub.load("path/to/cnnlab", "resnet50", source="local", weights="DEFAULT")
    torch.hub.list("path/to/cnnlab", source="local")

Every entry point is ``cnnlab.create_model(name, weights=..., **kwargs)``: ``weights`` is a
published set ("DEFAULT", "IMAGENET1K_V2", see ``cnnlab weights list``) or a weights file;
other keywords (``num_classes``, ``features_only``, builder options) go to ``create_model``.
"""

import os as _os
import sys as _sys

dependencies = ["torch", "numpy", "PIL", "rich", "safetensors"]

# A checkout's own code, also when cnnlab is not installed (src/ layout).
_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

from cnnlab.registry import create_model as _create_model  # noqa: E402
from cnnlab.registry import list_models as _list_models  # noqa: E402
from cnnlab.registry import model_info as _model_info  # noqa: E402


def _entrypoint(name):
    def entry(weights=None, **kwargs):
        return _create_model(name, weights=weights, **kwargs)

    info = _model_info(name)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name}: {info.title} ({info.authors}, {info.year}), {info.url}\n\n"
                     f"weights: None (random init), a published set such as 'DEFAULT', or a "
                     f"weights file; other keywords go to cnnlab.create_model.")
    return entry


globals().update({_name: _entrypoint(_name) for _name in _list_models()})
