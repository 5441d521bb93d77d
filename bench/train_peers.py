"""The PyTorch peers of the training benchmark, written without cnnlab's training code.

- idiomatic: a `Dataset` of uint8 images with per-sample torchvision v2 transforms in a
  `DataLoader` with workers; the model takes float batches copied to the device each step.
- synthetic (CUDA, ResNet-50): the reference's steps on one fixed random batch, the model's
  ceiling with no data pipeline at all;
- reference: a hand-written, device-resident loop: the training split is one uint8 tensor on
  the device, each batch is augmented as a whole (one affine matrix per image, applied with
  `affine_grid` + `grid_sample`), channels_last, bf16 autocast (+ torch.compile) on CUDA,
  fp32 on the CPU; loss and accuracy accumulate on the device and are read once per epoch.

Both build the network from the job's Keras-style layer list (or timm), with Keras's
initialisation (glorot_uniform kernels, zero biases) as cnnlab and Keras use, and Keras's
optimiser defaults. Each returns the per-epoch records `bench/train_child.py` prints.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

KERAS_EPSILON = 1e-7


def build_network(job: dict[str, Any]) -> tuple[nn.Module, str]:
    """The model (logits out) and its head: "sigmoid" (one unit) or "softmax"."""
    height, width, channels = job["input_shape"]
    if "timm" in job["peer_model"]:
        import timm

        name, classes = job["peer_model"]["timm"], job["num_classes"]
        return timm.create_model(name, num_classes=classes, in_chans=channels), "softmax"
    shape, layers, head = (channels, height, width), [], "softmax"
    for entry in job["layers"]:
        ((kind, params),) = entry.items()
        if kind == "Conv2D":
            padding = 0 if params.get("padding", "valid") == "valid" else "same"
            conv = nn.Conv2d(shape[0], params["filters"], params["kernel_size"], padding=padding)
            size = params["kernel_size"] - 1 if padding == 0 else 0
            shape = (params["filters"], shape[1] - size, shape[2] - size)
            layers += [conv, *_activation(params.get("activation"))]
        elif kind == "MaxPooling2D":
            pool = params.get("pool_size", 2)
            layers.append(nn.MaxPool2d(pool))
            shape = (shape[0], shape[1] // pool, shape[2] // pool)
        elif kind == "Flatten":
            layers.append(nn.Flatten())
            shape = (math.prod(shape),)
        elif kind == "Dense":
            layers.append(nn.Linear(shape[0], params["units"]))
            shape = (params["units"],)
            if params.get("activation") in ("softmax", "sigmoid"):
                head = params["activation"]  # the loss applies it; the model gives logits
            else:
                layers += _activation(params.get("activation"))
        elif kind == "Dropout":
            layers.append(nn.Dropout(params["rate"]))
        else:
            raise ValueError(f"the bench's PyTorch peers do not know layer {kind!r}")
    model = nn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):  # Keras's initialisation
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model, head


def _activation(name: str | None) -> list[nn.Module]:
    if name in (None, "linear"):
        return []
    if name == "relu":
        return [nn.ReLU()]
    raise ValueError(f"the bench's PyTorch peers do not know activation {name!r}")


def build_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Keras's optimisers: RMSprop rho 0.9, epsilon 1e-7; AdamW weight decay 0.004."""
    name, lr = cfg["name"], cfg["lr"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.get("momentum", 0.0))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=KERAS_EPSILON)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=KERAS_EPSILON)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, eps=KERAS_EPSILON, weight_decay=0.004)
    raise ValueError(f"unknown optimizer {name!r}")


def loss_and_correct(logits: torch.Tensor, labels: torch.Tensor, head: str):
    logits = logits.float()
    if head == "sigmoid":
        logits = logits[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        return loss, ((logits > 0).long() == labels).sum()
    return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).sum()


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


# --- idiomatic: DataLoader with workers, per-sample torchvision v2 transforms --------------------


class Images(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: v2.Transform):
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def torchvision_transforms(augment: dict[str, Any]) -> tuple[v2.Compose, v2.Compose]:
    """The preset in torchvision's words (one zoom for both axes; fill 0, no "nearest")."""
    zoom = augment.get("zoom_range", 0.0)
    shift = (augment.get("width_shift_range", 0.0), augment.get("height_shift_range", 0.0))
    affine = v2.RandomAffine(
        degrees=augment.get("rotation_range", 0.0),
        translate=shift if any(shift) else None,
        scale=(1 - zoom, 1 + zoom) if zoom else None,
        shear=augment.get("shear_range") or None,
        interpolation=v2.InterpolationMode.BILINEAR,
    )
    steps: list[v2.Transform] = [affine]
    if augment.get("horizontal_flip"):
        steps.append(v2.RandomHorizontalFlip())
    if augment.get("vertical_flip"):
        steps.append(v2.RandomVerticalFlip())
    scale = v2.ToDtype(torch.float32, scale=True)  # Keras scripts' rescale 1/255
    return v2.Compose([*steps, scale]), v2.Compose([scale])


def run_idiomatic(job: dict[str, Any], arrays: dict[str, np.ndarray], device: torch.device):
    torch.manual_seed(job["seed"])
    model, head = build_network(job)
    model = model.to(device)
    optimizer = build_optimizer(model.parameters(), job["optimizer"])
    train_tf, val_tf = torchvision_transforms(job["augment"])
    workers = job["workers"]
    common = {"num_workers": workers, "persistent_workers": workers > 0}
    common["pin_memory"] = device.type == "cuda"
    train = DataLoader(
        Images(arrays["x_train"], arrays["y_train"], train_tf),
        batch_size=job["batch_size"],
        shuffle=True,
        **common,
    )
    val = DataLoader(
        Images(arrays["x_val"], arrays["y_val"], val_tf), batch_size=job["val_batch_size"], **common
    )
    records = []
    for _ in range(job["epochs"]):
        start = time.perf_counter()
        model.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device):
                logits = model(x)
            loss, _ = loss_and_correct(logits, y, head)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for x, y in val:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast(device):
                    _, hits = loss_and_correct(model(x), y, head)
                correct, seen = correct + hits.item(), seen + len(y)
        records.append({"seconds": time.perf_counter() - start, "val_accuracy": correct / seen})
    return records, model


# --- reference: device-resident data, batched affine augmentation -------------------------------


def augment_batch(x: torch.Tensor, augment: dict[str, Any], generator: torch.Generator):
    """One random affine map per image (rotation, shear, zoom, shift, flips, as Keras draws
    them), bilinear, edge pixels repeated outside (Keras's fill_mode "nearest")."""
    batch, _, height, width = x.shape
    u = torch.rand(batch, 8, device=x.device, generator=generator) * 2 - 1  # U(-1, 1)
    angle = torch.deg2rad(u[:, 0] * augment.get("rotation_range", 0.0))
    shear = torch.deg2rad(u[:, 1] * augment.get("shear_range", 0.0))
    zoom = augment.get("zoom_range", 0.0)
    zx, zy = 1 + u[:, 2] * zoom, 1 + u[:, 3] * zoom
    tx = u[:, 4] * 2 * augment.get("width_shift_range", 0.0)  # a fraction of the width
    ty = u[:, 5] * 2 * augment.get("height_shift_range", 0.0)
    fx = torch.where(u[:, 6] < 0, -1.0, 1.0) if augment.get("horizontal_flip") else 1.0
    fy = torch.where(u[:, 7] < 0, -1.0, 1.0) if augment.get("vertical_flip") else 1.0
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear @ zoom @ flip, in pixels, then in affine_grid's normalised units
    a = cos * zx * fx
    b = (-cos * torch.sin(shear) - sin * torch.cos(shear)) * zy * fy
    c = sin * zx * fx
    d = (-sin * torch.sin(shear) + cos * torch.cos(shear)) * zy * fy
    aspect = width / height
    theta = torch.stack(
        [torch.stack([a, b / aspect, tx], 1), torch.stack([c * aspect, d, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def run_reference(
    job: dict[str, Any],
    arrays: dict[str, np.ndarray],
    device: torch.device,
    synthetic: bool = False,
):
    """With `synthetic`, the model's ceiling: the same training steps on one fixed batch of
    random inputs, already normalised and laid out on the device, so no gather, augmentation or
    conversion is left between steps (what a pipeline from a JPEG folder is measured against);
    validation as the reference's."""
    torch.manual_seed(job["seed"])
    model, head = build_network(job)
    layout = torch.channels_last  # faster on both: cuDNN tensor cores, oneDNN on the CPU
    model = model.to(device, memory_format=layout)
    optimizer = build_optimizer(model.parameters(), job["optimizer"])
    step_model = torch.compile(model) if device.type == "cuda" else model
    x_train = torch.from_numpy(arrays["x_train"]).to(device)
    y_train = torch.from_numpy(arrays["y_train"]).to(device)
    x_val = torch.from_numpy(arrays["x_val"]).to(device)
    y_val = torch.from_numpy(arrays["y_val"]).to(device)
    generator = torch.Generator(device=device).manual_seed(job["seed"])
    batch, records = job["batch_size"], []
    fixed = torch.rand(batch, *x_train.shape[1:], device=device, generator=generator)
    fixed = fixed.contiguous(memory_format=layout)  # 0..1, as the augmented batches are
    for _ in range(job["epochs"]):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), device=device, generator=generator)
        for first in range(0, len(order), batch):
            index = order[first : first + batch]
            if synthetic:
                x = fixed[: len(index)]
            else:
                x = augment_batch(x_train[index].float(), job["augment"], generator)
                x = x.mul_(1 / 255).contiguous(memory_format=layout)
            with autocast(device):
                logits = step_model(x)
            loss, _ = loss_and_correct(logits, y_train[index], head)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = torch.zeros((), device=device, dtype=torch.int64)
        with torch.no_grad():
            for first in range(0, len(y_val), job["val_batch_size"]):
                part = slice(first, first + job["val_batch_size"])
                x = (x_val[part].float() / 255).contiguous(memory_format=layout)
                with autocast(device):
                    correct += loss_and_correct(step_model(x), y_val[part], head)[1]
        accuracy = correct.item() / len(y_val)  # the epoch's one host synchronisation
        records.append({"seconds": time.perf_counter() - start, "val_accuracy": accuracy})
    return records, model
