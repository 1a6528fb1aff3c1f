"""Deployment: published weights and weight interop, BN folding, export (checked by a real
runtime), benchmarks and charts."""

from cnnlab.deploy.exporter import ExportResult, export
from cnnlab.deploy.fuse import FusionReport, fuse_bn, optimize_for_inference
from cnnlab.deploy.interop import LoadMismatch, LoadReport, load_weights
from cnnlab.deploy.weights import WeightsError, WeightSet, get_weights, list_weights

__all__ = [
    "ExportResult", "FusionReport", "LoadMismatch", "LoadReport", "WeightSet", "WeightsError",
    "export", "fuse_bn", "get_weights", "list_weights", "load_weights", "optimize_for_inference",
]
