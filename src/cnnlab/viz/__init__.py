"""Seeing inside a network: filters, feature maps, class activation maps, training curves.

Library functions return arrays, tensors and matplotlib figures; ``cnnlab viz`` saves them
(PNG and SVG). The effective receptive field lives in :mod:`cnnlab.analysis.erf`.
"""

from cnnlab.viz.cam import (
    CamResult,
    Faithfulness,
    class_activation_map,
    default_cam_layer,
    faithfulness,
    plot_cam,
)
from cnnlab.viz.curves import load_metrics, plot_run_curves
from cnnlab.viz.features import feature_maps, plot_feature_maps
from cnnlab.viz.filters import conv_layers, filter_grid, plot_filters
from cnnlab.viz.source import Source, layer_outputs, load_image, load_source, map_layers

__all__ = [
    "CamResult", "Faithfulness", "Source", "class_activation_map", "conv_layers",
    "default_cam_layer", "faithfulness", "feature_maps", "filter_grid", "layer_outputs",
    "load_image", "load_metrics", "load_source", "map_layers", "plot_cam", "plot_feature_maps",
    "plot_filters", "plot_run_curves",
]
