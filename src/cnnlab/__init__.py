"""cnnlab: the classic CNN architectures, built from their papers."""

from typing import Any

from cnnlab.registry import ModelInfo, Paper, create_model, list_models, model_info, register_model

__all__ = [
    "ModelInfo",
    "Paper",
    "create_model",
    "list_models",
    "load_weights",
    "model_info",
    "register_model",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # cnnlab.load_weights is cnnlab.deploy.interop's, imported on first use.
    if name == "load_weights":
        from cnnlab.deploy.interop import load_weights

        return load_weights
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
