"""Keras's ImageDataGenerator, timed alone: the peer of bench/augment.py.

Runs in its own environment (`make bench-env` builds .venv-bench with keras + tensorflow-cpu),
never in the project's .venv, and imports nothing from cnnlab:

    .venv-bench/bin/python bench/keras_peer.py --shape 28,28,1 --images 2048 --batch 64

For each --shape (repeatable) it prints one JSON line on stdout: the images per run, the seconds
of each run, their median and img/s, and the versions. The images are the ones bench/augment.py
times: numpy's default_rng(seed) integers in 0..255, (N, H, W, C). Each run iterates a fresh
`ImageDataGenerator(S0).flow(x, batch_size, shuffle=False)` over N images (ceil(N / batch)
batches) after one untimed warm-up batch. Threads are limited to --threads (2) before numpy or
TensorFlow load; the generator itself is one Python loop over scipy.ndimage, one core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from keras_env import image_data_generator, limit_threads, versions

S0 = {  # the S0 preset of cnnlab (src/cnnlab/presets.py)
    "rotation_range": 20,
    "shear_range": 0.2,  # degrees, as Keras
    "zoom_range": 0.2,
    "horizontal_flip": True,
    "fill_mode": "nearest",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", required=True, help="H,W,C, e.g. 28,28,1")
    parser.add_argument("--images", type=int, default=2048, help="images per timed run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.shape = [tuple(int(v) for v in text.split(",")) for text in args.shape]
    if any(len(shape) != 3 or min(shape) < 1 for shape in args.shape):
        parser.error(f"--shape takes H,W,C with positive sizes, got {args.shape}")
    if min(args.images, args.batch, args.repeats, args.threads) < 1:
        parser.error("--images, --batch, --repeats and --threads must be at least 1")
    return args


def one_run(generator, x, batch: int) -> float:
    flow = generator.flow(x, batch_size=batch, shuffle=False)
    start = time.perf_counter()
    seen = 0
    while seen < len(x):
        seen += len(next(flow))
    return time.perf_counter() - start


def time_shape(generator, shape: tuple[int, int, int], args: argparse.Namespace) -> dict:
    import numpy as np

    rng = np.random.default_rng(args.seed)
    x = rng.integers(0, 256, size=(args.images, *shape), dtype=np.uint8)
    next(generator.flow(x[: args.batch], batch_size=args.batch, shuffle=False))  # warm-up
    runs = [one_run(generator, x, args.batch) for _ in range(args.repeats)]
    seconds = statistics.median(runs)
    return {
        "shape": list(shape),
        "images": args.images,
        "batch": args.batch,
        "runs": runs,
        "seconds": seconds,
        "img_per_s": args.images / seconds if seconds > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    cls, source = image_data_generator()
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    except (ImportError, RuntimeError):  # no TensorFlow, or its pools already started
        pass
    generator = cls(**S0)
    about = versions(source) | {"threads": args.threads}
    for shape in args.shape:
        print(json.dumps(time_shape(generator, shape, args) | about), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
