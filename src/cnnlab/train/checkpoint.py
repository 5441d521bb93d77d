"""Weights and training state on disk, written atomically and read without unpickling code.

`model.safetensors` holds the best weights (safetensors: tensors only, nothing executable).
`checkpoints/last.pt` holds everything needed to continue: weights, optimiser, schedule,
random-number state, the history so far and the weight average (train.ema / train.swa, under
"average"); it is read with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cnnlab.atomic import atomic_path
from cnnlab.errors import CnnlabError
from cnnlab.runfiles import CHECKPOINT

LAST = Path(CHECKPOINT)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(path)))


def save_state(folder: Path, state: dict[str, Any]) -> None:
    with atomic_path(folder / LAST) as temp:
        torch.save(state, temp)


def load_state(folder: Path) -> dict[str, Any]:
    path = folder / LAST
    if not path.is_file():
        raise CnnlabError(f"{folder}: no checkpoint to resume from ({LAST} is missing)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or foreign file: say which, never unpickle it
        raise CnnlabError(f"{path}: not a readable cnnlab checkpoint ({err})") from None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
