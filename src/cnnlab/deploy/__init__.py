"""Deployment: published weights and weight interop (and, from cnnlab.deploy's other modules,
BN folding, export and benchmarks)."""

from cnnlab.deploy.interop import LoadMismatch, LoadReport, load_weights  # noqa: F401
from cnnlab.deploy.weights import WeightsError, WeightSet, get_weights, list_weights  # noqa: F401
