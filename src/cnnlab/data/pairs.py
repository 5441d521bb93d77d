"""data.targets: each source image's target image, from a second folder or .zip that holds it
under the same relative path (task: reconstruction with paired images, e.g. a noisy scan and
its clean copy). The targets are checked and decoded as the source is, through the same cache,
at the same size and colour mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cnnlab.config import DataConfig
from cnnlab.errors import DataError

if TYPE_CHECKING:
    from cnnlab.data.pipeline import Examined

SHOWN = 5  # missing paths named in the error


def paired_rows(found: Examined, paths: list[str], source: str, targets: str) -> np.ndarray:
    """Rows of `found` (the targets) for each source path; DataError naming missing ones."""
    row_of = {relative(s.path, targets): k for k, s in enumerate(found.samples) if s.reason is None}
    wanted = [relative(path, source) for path in paths]
    missing = [path for path in wanted if path not in row_of]
    if missing:
        named = ", ".join(missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
        raise DataError(
            f"data.targets: {len(missing)} of the {len(paths)} images of {source} have no "
            f"readable target of the same relative path in {targets} ({named}); add them, or "
            "remove the images without one"
        )
    return np.asarray([row_of[path] for path in wanted], dtype=np.int64)


def relative(path: str, source: str) -> str:
    """A sample's path within its source (a folder's or a zip's)."""
    prefix = source.rstrip("/\\") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def target_config(cfg: DataConfig) -> DataConfig:
    """The data section that reads the targets: the source's, pointed at data.targets, every
    file kept (max_per_class chooses among the source's images, which the pairing follows)."""
    assert cfg.targets is not None
    return cfg.model_copy(update={"source": cfg.targets, "targets": None, "max_per_class": None})
