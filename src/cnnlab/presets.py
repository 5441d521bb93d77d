"""Augmentation presets by name: the reports' ImageDataGenerator settings.

A config names one (`augment: {preset: s1}`) and may override single keys beside it. They are
config data, read by `config.AugmentConfig`, so this module imports no augmentation code.
"""

from __future__ import annotations

from typing import Any

from cnnlab.registry import Registry

AUGMENT_PRESETS: Registry[dict[str, Any]] = Registry("augmentation preset")

# S0 (pistols vs smartphones, VGG16 fine-tuning)
AUGMENT_PRESETS.register("s0")(
    {
        "rotation_range": 20,
        "shear_range": 0.2,
        "zoom_range": 0.2,
        "horizontal_flip": True,
        "fill_mode": "nearest",
    }
)
# S1 (counting fingers): hands in any orientation
AUGMENT_PRESETS.register("s1")(
    {
        "horizontal_flip": True,
        "vertical_flip": True,
        "rotation_range": 90,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "zoom_range": 0.2,
    }
)
# S2 (blood cells): the setting that reached 0.921
AUGMENT_PRESETS.register("s2")(
    {
        "rotation_range": 10,
        "width_shift_range": 0.3,
        "height_shift_range": 0.3,
        "shear_range": 0.3,
        "zoom_range": 0.2,
        "horizontal_flip": True,
        "fill_mode": "nearest",
    }
)
