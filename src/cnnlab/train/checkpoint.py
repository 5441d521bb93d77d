"""Weights and training state on disk, written atomically and read without unpickling code.

`model.safetensors` holds the best weights (safetensors: tensors only, nothing executable).
`checkpoints/last.pt` holds everything needed to continue: weights, optimiser, schedule,
random-number state, the history so far and the weight average (train.ema / train.swa, under
"average"); it is read with `weights_only=True`. `checkpoints/previous.pt` is the epoch before's,
so a damaged last.pt (a disk error, a copy cut short) costs one epoch again, not the run (Keras's
BackupAndRestore keeps its backup the same way).
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cnnlab.atomic import atomic_path
from cnnlab.errors import CnnlabError
from cnnlab.runfiles import CHECKPOINT, PREVIOUS_CHECKPOINT

LAST, PREVIOUS = Path(CHECKPOINT), Path(PREVIOUS_CHECKPOINT)
NEEDED = ("model", "state", "rng")  # what every cnnlab checkpoint holds (callbacks.Checkpoint)


class CheckpointUnreadable(CnnlabError):
    """A checkpoint file that cannot be resumed from; the message names it and says why."""


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """`path` := the model's weights (a run's model.safetensors); a file system error says
    how to go on."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        with atomic_path(path) as temp:
            save_file(tensors, str(temp))
    except (OSError, SafetensorError) as err:
        if isinstance(err, SafetensorError) and "I/O error" not in str(err):
            raise  # not the disk's doing
        why = err.strerror if isinstance(err, OSError) else str(err).rsplit(": ", 1)[-1]
        raise CnnlabError(
            f"{path}: could not save the weights ({why or err}); {_go_on(path.parent)}"
        ) from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(path)))


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """checkpoints/last.pt := `state`, the old last.pt kept as previous.pt. At every moment
    last.pt is a complete checkpoint (the new one is written whole before it replaces the old,
    which is hard-linked to previous.pt first), so a kill at any point loses no epoch. A file
    system error says what is kept and how to go on."""
    last = folder / LAST
    try:
        with atomic_path(last) as temp:
            # through a Python file: a full disk is then an OSError (ENOSPC), where torch's
            # own writer of a path says "unexpected pos 704 vs 598"
            with temp.open("wb") as handle:
                torch.save(state, handle)
            if _complete(last):  # a damaged last.pt never replaces a good previous.pt
                _keep_as_previous(last, folder / PREVIOUS)
    except OSError as err:
        raise CnnlabError(
            f"{last}: could not save the checkpoint of epoch {state['state']['epoch']} "
            f"({err.strerror or err}); {_go_on(folder)}"
        ) from None


def _go_on(folder: Path) -> str:
    """What a failed save left to resume from, and what to do, in words."""
    for path in (folder / LAST, folder / PREVIOUS):
        try:
            epoch = read_checkpoint(path)["state"]["epoch"]
        except CheckpointUnreadable:
            continue
        return (
            f"{path.name} still holds epoch {epoch}. Free space or fix the folder's "
            "permissions, then continue with --resume"
        )
    return "no checkpoint is kept yet. Free space or fix the folder's permissions, then run again"


def _keep_as_previous(last: Path, previous: Path) -> None:
    """previous.pt := last.pt, replaced atomically: a hard link (no copy of a large file), or a
    copy where the file system has no links."""
    with atomic_path(previous) as temp:
        temp.unlink()
        try:
            os.link(last, temp)
        except OSError:
            shutil.copyfile(last, temp)


def _complete(path: Path) -> bool:
    """Whether `path` is a whole torch.save file (a zip archive: its directory is at the end,
    so a file cut short fails), read without loading it."""
    return path.is_file() and zipfile.is_zipfile(path)


def load_state(folder: Path, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The last complete epoch's state: last.pt, or previous.pt when last.pt is unreadable
    (then `warn` is told, naming the file; the resumed run replays that one epoch more)."""
    last, previous = folder / LAST, folder / PREVIOUS
    if not last.is_file() and not previous.is_file():
        raise CnnlabError(f"{folder}: no checkpoint to resume from ({LAST} is missing)")
    try:
        return read_checkpoint(last)
    except CheckpointUnreadable as damaged:
        if not previous.is_file():
            raise
        try:
            state = read_checkpoint(previous)
        except CheckpointUnreadable as too:
            raise CnnlabError(
                f"{folder}: no readable checkpoint to resume from: {damaged}; {too}. Start a new "
                "run (without --resume)"
            ) from None
        if warn is not None:
            epoch = state["state"].get("epoch", "?")
            warn(f"{damaged}; resuming from {previous} (epoch {epoch}), one epoch earlier")
        return state


def read_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint file, read with weights_only=True; CheckpointUnreadable says why not, in
    cnnlab's words (PyTorch's own advice for such files is to unpickle them without checks)."""
    if not path.is_file():
        raise CheckpointUnreadable(f"{path}: missing")
    size = path.stat().st_size
    if size == 0:
        reason = "an empty file"
    elif not _complete(path):
        reason = f"cut short, or not a PyTorch checkpoint: {size} bytes"
    else:
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            reason = "it holds Python objects besides tensors, which cnnlab never unpickles"
        except Exception as err:  # a damaged archive: torch's message advises unsafe loading
            reason = f"damaged: {type(err).__name__}"
        else:
            if isinstance(saved, dict) and all(key in saved for key in NEEDED):
                return saved
            reason = "it holds no cnnlab training state"
    raise CheckpointUnreadable(f"{path}: not a readable cnnlab checkpoint ({reason})")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
