"""The experiment file: typed, validated, frozen sections, each default with its reason.

Keras words outside (target_size, validation_split, rotation_range, ...), so a Keras script's
settings carry over one to one. Loading, `--set` overrides and error messages live in
`config_io.py`. One module a section (or a few small ones): `base` (what every section
shares), `data`, `augment`, `model`, `training`, `outputs`, `reconstruction`, and `experiment`,
the whole file and the checks across sections.
"""

from cnnlab.config.augment import MAX_MAGNITUDE, AugmentConfig, AugMixConfig
from cnnlab.config.base import Section
from cnnlab.config.data import DataConfig
from cnnlab.config.experiment import TASK_MONITORS, Experiment
from cnnlab.config.model import ClassifierConfig, ModelConfig, StageConfig, WhitenConfig
from cnnlab.config.outputs import (
    EnsembleConfig,
    EvaluateConfig,
    MlflowConfig,
    OutputConfig,
    ReportConfig,
    TrackingConfig,
)
from cnnlab.config.reconstruction import (
    BlurStep,
    DegradeStep,
    InvertStep,
    MaskStep,
    NoiseStep,
    ReconstructionConfig,
    ResizeStep,
)
from cnnlab.config.training import (
    PARAM_KINDS,
    EarlyStoppingConfig,
    EmaConfig,
    LookaheadConfig,
    OptimizerConfig,
    ParamGroupConfig,
    ScheduleConfig,
    SwaConfig,
    TrainConfig,
)

__all__ = [
    "MAX_MAGNITUDE",
    "PARAM_KINDS",
    "TASK_MONITORS",
    "AugMixConfig",
    "AugmentConfig",
    "BlurStep",
    "ClassifierConfig",
    "DataConfig",
    "DegradeStep",
    "EarlyStoppingConfig",
    "EmaConfig",
    "EnsembleConfig",
    "EvaluateConfig",
    "Experiment",
    "InvertStep",
    "LookaheadConfig",
    "MaskStep",
    "MlflowConfig",
    "ModelConfig",
    "NoiseStep",
    "OptimizerConfig",
    "OutputConfig",
    "ParamGroupConfig",
    "ReconstructionConfig",
    "ReportConfig",
    "ResizeStep",
    "ScheduleConfig",
    "Section",
    "StageConfig",
    "SwaConfig",
    "TrackingConfig",
    "TrainConfig",
    "WhitenConfig",
]
