"""cnnlab: the classic CNN architectures, built from their papers."""

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


def __getattr__(name: str) -> object:
    # Imported on first use, not with the package (which imports nothing): `cnnlab` then
    # starts without torch, so the CLI's handlers (one-line errors, Ctrl-C) are in place
    # before the slow imports run. cnnlab.load_weights is cnnlab.deploy.interop's.
    if name == "load_weights":
        from cnnlab.deploy.interop import load_weights

        return load_weights
    if name in __all__:
        from cnnlab import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
