"""An exported run's model card (MODEL_CARD.md) and the names of the files beside it: what
the model is, what it was trained and measured on, what to feed it, what it is for, and how to
load each exported file. The files themselves are written by cnnlab.runs.export."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cnnlab.runs.finished import FinishedRun

FILES = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "exported-program": "model.pt2",
}
TITLES = {"onnx": "ONNX", "torchscript": "TorchScript", "exported-program": "ExportedProgram"}
CARD = "MODEL_CARD.md"
EXTRA_FILE = "cnnlab.json"  # the metadata inside a TorchScript file and an ExportedProgram
SIDECAR_SUFFIX = ".json"  # model.pt2 -> model.pt2.json: an ExportedProgram's metadata
INPUT, OUTPUT = "images", "probabilities"

TOLERANCE = 1e-4  # largest |Δp| allowed between the exported graph and PyTorch, fp32


@dataclass(frozen=True)
class Parity:
    """The exported graph against the PyTorch wrapper on the same images."""

    format: str
    split: str  # "test", "val", "train", or "random" when the run's data could not be read
    images: int
    max_abs_diff: float  # max |Δp| over every image and class
    argmax_differs: int  # images whose most probable class differs
    note: str = ""  # why random images were used

    @property
    def ok(self) -> bool:
        return self.max_abs_diff < TOLERANCE and self.argmax_differs == 0

    def line(self) -> str:
        """e.g. `ONNX parity on 120 test images: max |Δp| 3.1e-07, argmax identical`."""
        which = f"{self.images} {self.split} images" + (f" ({self.note})" if self.note else "")
        argmax = (
            "argmax identical"
            if self.argmax_differs == 0
            else f"argmax differs on {self.argmax_differs}"
        )
        return (
            f"{TITLES[self.format]} parity on {which}: max |Δp| {self.max_abs_diff:.1e}, {argmax}"
        )


def model_card(run: FinishedRun, metadata: dict[str, Any], record: dict[str, Any]) -> str:
    """MODEL_CARD.md: what the model is, what it was trained and measured on, what to feed
    it, what it is for, and how to load each exported file in the folder."""
    manifest, data = run.manifest, run.manifest["data"]
    height, width = metadata["input_size"]
    classes = metadata["classes"]
    sizes = data.get("split_sizes", {})
    lines = [
        f"# Model card: {run.folder.name}",
        "",
        f"A {metadata['model']} image classifier, trained by cnnlab "
        f"{manifest.get('cnnlab', '?')} (finished {manifest.get('finished', '?')}, seed "
        f"{run.config.seed}), exported by cnnlab {metadata['cnnlab_version']}.",
        "",
        "## Files",
        "",
        "| file | format | input -> output | parity with PyTorch |",
        "|---|---|---|---|",
    ]
    for fmt, entry in record["exports"].items():
        parity = Parity(**{k: v for k, v in entry["parity"].items() if k != "tolerance"})
        lines.append(
            f"| `{entry['file']}` | {TITLES[fmt]} | {entry['details']} | "
            f"{_cell(parity.line().split(': ', 1)[1])} on {parity.images} {parity.split} images |"
        )
    if "exported-program" in record["exports"]:
        lines.append("")
        lines.append(f"`{FILES['exported-program']}{SIDECAR_SUFFIX}` holds its metadata.")
    lines += [
        "",
        "## Data",
        "",
        f"- Source: `{data.get('source', '?')}` (fingerprint {data.get('fingerprint', '?')})",
        f"- {len(classes)} classes, in output order: {', '.join(f'`{c}`' for c in classes)}",
        "- Split sizes: " + ", ".join(f"{name} {n}" for name, n in sizes.items()),
        "",
        "## Metrics",
        "",
        *_metrics_table(run.metrics),
        "",
        "## Input and preprocessing",
        "",
        f"Feed uint8 images as an array of shape (N, {metadata['channels']}, {height}, "
        f"{width}) (NCHW; N = 1 for a file of fixed batch, any N for a dynamic one), "
        f"{'RGB channel order' if metadata['channels'] == 3 else 'one grayscale channel'}, "
        "values 0..255, decoded as the run decoded its data:",
        "",
        f"- colour mode `{metadata['color_mode']}`"
        + (' (Pillow\'s `convert("L")`, ITU-R 601-2 luma)' if metadata["channels"] == 1 else ""),
        f"- resized to {height}x{width} (height x width): `{metadata['resize']}` "
        f"({_resize_words(metadata['resize'])}), `{metadata['interpolation']}` interpolation",
        f"- transparent pixels composited onto RGB {tuple(metadata['background'])}",
        "",
        "Inside the graph (nothing to do before): "
        + _normalization_words(metadata["normalization"])
        + f", then the network, then {metadata['output']}. The output `{OUTPUT}` is (N, "
        f"{len(classes)}) probabilities in the class order above; they sum to 1 per image.",
        "",
        "Metadata (classes as JSON, input size, colour mode, normalisation, versions): ONNX "
        "`metadata_props`, TorchScript's extra file `cnnlab.json`, the ExportedProgram's "
        "`model.pt2.json`.",
        "",
        "## Intended use",
        "",
        f"Sorting images like those of `{data.get('source', '?')}` into these {len(classes)} "
        "classes. The metrics above were measured on held-out splits of that same source "
        "only: on images from elsewhere (other cameras, lighting, framing, subjects) expect "
        "lower accuracy and measure it before relying on the model. It always answers one of "
        "its classes: there is no 'none of these', so an image of something else still gets a "
        "class, sometimes with high confidence. Not for decisions about people without a "
        "human in the loop.",
    ]
    if run.config.evaluate.tta:
        lines += [
            "",
            "The run's metrics averaged each image with its mirror image (test-time "
            "augmentation); the exported graph classifies each image once.",
        ]
    lines += ["", "## Loading it", ""]
    for fmt in record["exports"]:
        lines += [f"### {TITLES[fmt]}", "", "```python", _snippet(fmt, metadata), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    """Text in a Markdown table cell: its pipes escaped."""
    return text.replace("|", "\\|")


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    """metrics.json per split: accuracy, loss, top-k where reported, macro F1."""
    splits = {name: entry for name, entry in metrics.items() if isinstance(entry, dict)}
    top = sorted({key for entry in splits.values() for key in entry if key.startswith("top_")})
    keys = ["accuracy", "loss", *top]
    header = ["split", *keys, "macro F1"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in splits.items():
        macro = entry.get("macro_avg")
        f1 = macro.get("f1") if isinstance(macro, dict) else None
        cells = [name, *(_number(entry.get(key)) for key in keys), _number(f1)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _resize_words(policy: str) -> str:
    return {
        "stretch": "the whole image to that size, aspect ratio not kept",
        "pad": "fitted inside, letterboxed with the background colour",
        "crop": "centre-cropped to the aspect ratio, then resized",
    }.get(policy, policy)


def _normalization_words(norm: dict[str, Any]) -> str:
    steps = [f"x * {norm['rescale']:.6g}"]
    if norm.get("samplewise_center"):
        steps.append("minus each image's mean")
    if norm.get("samplewise_std"):
        steps.append("divided by each image's standard deviation")
    if norm.get("mean") is not None:
        steps.append("minus the per-channel mean " + _floats(norm["mean"]))
    if norm.get("std") is not None:
        steps.append("divided by the per-channel std " + _floats(norm["std"]))
    return ", ".join(steps)


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# Pillow's calls that decode an image as cnnlab's data pipeline does (cnnlab.data.decode)
_RESIZE = {
    "stretch": "image = image.resize((width, height), {method})",
    "crop": "image = ImageOps.fit(image, (width, height), {method})",
    "pad": "image = ImageOps.pad(image, (width, height), {method}, color={fill})",
}


def _snippet(fmt: str, metadata: dict[str, Any]) -> str:
    """Code that loads the file and classifies one image file, image.png, with its metadata."""
    method = f"Image.Resampling.{metadata['interpolation'].upper()}"
    mode = "L" if metadata["channels"] == 1 else "RGB"
    background = tuple(metadata["background"])
    fill = background if mode == "RGB" else _luma(background)
    resize = _RESIZE[metadata["resize"]].format(method=method, fill=fill)
    decode = [
        f'image = Image.open("image.png").convert("{mode}")  # alpha: composite it first',
        resize,
        "pixels = np.asarray(image, dtype=np.uint8)",
        "chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)",
        "x = np.ascontiguousarray(chw[None])  # (1, C, H, W) uint8",
    ]
    imports = ["import json", "", "import numpy as np"]
    pil = (
        "from PIL import Image, ImageOps"
        if metadata["resize"] != "stretch"
        else "from PIL import Image"
    )
    if fmt == "onnx":
        head = [
            *imports,
            "import onnxruntime",
            pil,
            "",
            f'session = onnxruntime.InferenceSession("{FILES[fmt]}")',
            "meta = session.get_modelmeta().custom_metadata_map  # strings; JSON where not text",
            'classes = json.loads(meta["classes"])',
            'height, width = json.loads(meta["input_size"])',
        ]
        run = [f'p = session.run(["{OUTPUT}"], {{"{INPUT}": x}})[0][0]']
    elif fmt == "torchscript":
        head = [
            *imports,
            "import torch",
            pil,
            "",
            f'extra = {{"{EXTRA_FILE}": ""}}',
            f'model = torch.jit.load("{FILES[fmt]}", _extra_files=extra)',
            f'meta = json.loads(extra["{EXTRA_FILE}"])',
            'classes, (height, width) = meta["classes"], meta["input_size"]',
        ]
        run = ["with torch.no_grad():", "    p = model(torch.from_numpy(x))[0].numpy()"]
    else:
        head = [
            *imports,
            "import torch",
            pil,
            "",
            f'model = torch.export.load("{FILES[fmt]}").module()',
            f'with open("{FILES[fmt]}{SIDECAR_SUFFIX}") as f:',
            "    meta = json.load(f)",
            'classes, (height, width) = meta["classes"], meta["input_size"]',
        ]
        run = ["with torch.no_grad():", "    p = model(torch.from_numpy(x))[0].numpy()"]
    tail = ["print(classes[int(p.argmax())], float(p.max()))"]
    return "\n".join([*head, "", *decode, *run, *tail])


def _luma(rgb: tuple[int, ...]) -> int:
    """The background as Pillow's convert("L") gives it: grayscale's pad colour."""
    from PIL import Image

    return int(Image.new("RGB", (1, 1), rgb[:3]).convert("L").getpixel((0, 0)))  # type: ignore[arg-type]


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
