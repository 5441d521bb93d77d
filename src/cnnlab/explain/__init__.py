"""What a network looks at: class-activation heat maps and feature maps of finished models.

heat = class_activation_maps(model, inputs)            # (N, H, W) in [0, 1]; Grad-CAM
pictures = overlay(images, heat)                        # (N, 3, H, W) uint8
maps = feature_maps(model, inputs[:1], ["conv2d_1"])    # {name: (C, H, W)}
png = feature_grid_png("conv2d_1", maps["conv2d_1"])

`inputs` are model-ready (normalised as the model was trained); layers go by the names
`cnnlab summary` prints (see layers.py). pytorch-grad-cam is imported only when a heat map is
computed.
"""

from cnnlab.explain.cam import CAM_METHODS, class_activation_maps, overlay, predicted_classes
from cnnlab.explain.features import feature_grid, feature_maps
from cnnlab.explain.layers import SpatialLayer, find_layer, spatial_layers, target_layer
from cnnlab.explain.pictures import feature_grid_png, overlay_png

__all__ = [
    "CAM_METHODS",
    "SpatialLayer",
    "class_activation_maps",
    "feature_grid",
    "feature_grid_png",
    "feature_maps",
    "find_layer",
    "overlay",
    "overlay_png",
    "predicted_classes",
    "spatial_layers",
    "target_layer",
]
