"""Deployment: fold BN, export (checked by a real runtime), benchmark, chart."""

from cnnlab.deploy.exporter import ExportResult, export
from cnnlab.deploy.fuse import FusionReport, fuse_bn, optimize_for_inference

__all__ = ["ExportResult", "FusionReport", "export", "fuse_bn", "optimize_for_inference"]
