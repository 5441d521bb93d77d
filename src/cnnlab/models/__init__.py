"""Models: Keras-style layer lists, the seed reports' architectures by name, and summaries.

model = build_model("carlosnet", input_shape=(128, 128, 1), num_classes=6)
logits = model(images)                  # images: N, C, H, W
probs = model.probabilities(logits)     # the spec's final softmax/sigmoid
print(format_summary(model, (128, 128, 1)))
"""

from cnnlab.models.build import KerasModel, build_layers
from cnnlab.models.summary import SummaryRow, count_params, format_summary, summary_rows
from cnnlab.models.zoo import MODELS, build_model, model_from_config

__all__ = [
    "MODELS",
    "KerasModel",
    "SummaryRow",
    "build_layers",
    "build_model",
    "count_params",
    "format_summary",
    "model_from_config",
    "summary_rows",
]
