"""cnnlab: the classic CNN architectures, built from their papers."""

from cnnlab.registry import ModelInfo, Paper, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "Paper", "create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"
