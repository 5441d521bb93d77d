"""`model`: a zoo name, a Keras-style layer list or a backbone with its head and stages; a
features run's classifier."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cnnlab.config.base import Section, refused


class StageConfig(Section):
    """One fine-tuning stage: what trains, how fast, for how long."""

    epochs: PositiveInt
    # Backbone blocks that train, counted from the output end: 0 trains the head alone
    # (stage 1), 1 also the last block (S2's block5), "all" everything.
    unfreeze: NonNegativeInt | Literal["all"] = 0
    lr: PositiveFloat | None = None  # the head's; None: train.optimizer.lr
    backbone_lr: PositiveFloat | None = None  # the top unfrozen block's; None: lr
    layer_decay: float = Field(default=1.0, gt=0.0, le=1.0)  # each lower block: lr times this again
    # BatchNorm statistics of unfrozen blocks: frozen (Keras's fine-tuning advice for small
    # data) or train; frozen blocks' statistics never change.
    batchnorm: Literal["frozen", "train"] = "frozen"


class WhitenConfig(Section):
    """The first Conv2D's kernels from the eigenvectors of the covariance of its patches (C x kh
    x kw values) of training images, each scaled by 1/sqrt(eigenvalue + eps): outputs with
    unit, uncorrelated variances. Its filters are those vectors (C x kh x kw of them) or, as
    airbench's 2x2 conv with 24 filters, the vectors and their negatives (twice as many)."""

    images: PositiveInt = 5000  # airbench's; drawn by the seed from the training split
    eps: PositiveFloat = 5e-4  # airbench's; keeps near-constant directions from exploding
    trainable: bool = False  # airbench freezes the kernels (the bias trains)


class ModelConfig(Section):
    name: str | None = None  # a registered architecture, e.g. carlosnet
    layers: list[dict[str, Any] | str] | None = None  # or a Keras-style layer list
    # or a pretrained convolutional base (vgg16, resnet50, efficientnet_lite0, timm/NAME) ...
    backbone: str | None = None
    # ... with weights from a file (.safetensors/.pth), a local source (efficientnet-lite0),
    # weights the libraries download into their caches (imagenet, timm:TAG, torchvision:NAME,
    # hf-hub:ORG/NAME; models/hub.py) or none (random); unset: the backbone's local source,
    # if it has one (never a download).
    weights: str | None = None
    # ... and a Keras-style head on its feature map; None: GlobalAveragePooling2D + Dense softmax
    head: list[dict[str, Any] | str] | None = None
    stages: list[StageConfig] | None = None  # None: one stage, everything trains
    mean: tuple[float, float, float] | None = None  # None: the weights' own (0..1 images)
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = None
    # or a finished run's folder: its network up to the last layer, as a features run's
    # extractor (with a classifier: section), with the run's input size and normalisation
    from_run: str | None = None
    # airbench's first layer: the first Conv2D's kernels set, at the start of a run, to whiten
    # its patches of training images (models/whiten.py). true: airbench's settings below.
    whiten_first_conv: WhitenConfig | None = None

    @field_validator("whiten_first_conv", mode="before")
    @classmethod
    def _whiten_switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {} if value else None
        return value

    @field_validator("whiten_first_conv")
    @classmethod
    def _whitens_own_conv(cls, whiten: WhitenConfig | None, info: ValidationInfo) -> Any:
        if whiten is not None and (info.data.get("backbone") or info.data.get("from_run")):
            raise refused(
                "sets the first Conv2D of model.name or model.layers; a backbone's has its "
                "pretrained weights: remove it"
            )
        return whiten

    @model_validator(mode="after")
    def _one_of(self) -> ModelConfig:
        keys = ("name", "layers", "backbone", "from_run")
        chosen = [key for key in keys if getattr(self, key) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of model.name, model.layers, model.backbone or model.from_run"
            )
        if self.backbone is None:
            extra = [k for k in ("weights", "head", "stages", "mean", "std") if getattr(self, k)]
            if extra:
                raise ValueError(f"model.{extra[0]} needs model.backbone")
        if self.stages is not None and not self.stages:
            raise ValueError("model.stages: give at least one stage, or leave it out")
        return self


class ClassifierConfig(Section):
    """S2's hybrid CNN: a scikit-learn classifier on standardised features of the network
    (model.backbone or model.from_run), each image pooled to one vector."""

    # svm: RBF kernel (S2's); linear_svm: LinearSVC, for many images; logistic: multinomial;
    # knn: k nearest. The SVMs' probabilities come from Platt scaling (cross-validated).
    name: Literal["logistic", "linear_svm", "svm", "knn"] = "svm"
    C: PositiveFloat = 1.0  # scikit-learn's default; smaller regularises more
    gamma: Literal["scale", "auto"] | PositiveFloat = "scale"  # svm; scikit-learn's default
    k: PositiveInt = 5  # knn's voting neighbours; scikit-learn's default
    # logistic, linear_svm: solver steps; scikit-learn's 100 (logistic) stops short on
    # thousands of standardised features
    max_iter: PositiveInt = 1000
    # avg: GlobalAveragePooling2D (C values); flatten: Keras's Flatten (S2's 4x4x512 VGG16 map)
    pool: Literal["avg", "flatten"] = "avg"

    @model_validator(mode="after")
    def _knobs_it_uses(self) -> ClassifierConfig:
        uses = {"logistic": "C max_iter", "linear_svm": "C max_iter", "svm": "C gamma", "knn": "k"}
        for knob in sorted(self.model_fields_set - {"name", "pool"}):
            # a saved config.yaml spells out every default: only a changed knob is a mistake
            unchanged = getattr(self, knob) == type(self).model_fields[knob].default
            if knob not in uses[self.name].split() and not unchanged:
                its = uses[self.name].replace(" ", ", ")
                raise ValueError(f"{self.name} uses {its}, not {knob}; remove classifier.{knob}")
        return self
