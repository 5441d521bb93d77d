"""Keras 3 training with ImageDataGenerator, the seed reports' way: the peer of bench/train.py.

Runs in its own environment (`make bench-env` builds .venv-bench with keras + tensorflow-cpu),
never in the project's .venv, and imports nothing from cnnlab:

    .venv-bench/bin/python bench/keras_train_peer.py JOB.json [JOB.json ...]
    KERAS_BACKEND=torch python3 bench/keras_train_peer.py JOB.json  # GPU image: Keras on CUDA

The job (written by bench/train.py) names the .npy files of the training and validation splits,
the layer list (Keras's own words: Conv2D, MaxPooling2D, Flatten, Dense, Dropout), the
ImageDataGenerator parameters, batch size, optimiser and epochs.
It trains with `model.fit(ImageDataGenerator(**params, rescale=1/255).flow(x, y, batch_size),
epochs=E, validation_data=(x_val / 255, y_val))` and prints one JSON line per job: per-epoch seconds
(on_epoch_begin to on_epoch_end: the training pass and the validation pass) and validation
accuracy, count_params(), peak resident memory (VmHWM; and VmRSS after importing TensorFlow
and Keras) and the versions. Threads are limited to the job's count (2) before numpy
or TensorFlow load.
"""

from __future__ import annotations

import json
import sys
import time

from keras_env import image_data_generator, limit_threads, torch_backend, versions

GENERATOR_KEYS = (  # the ImageDataGenerator parameters a cnnlab preset may set
    "rotation_range",
    "width_shift_range",
    "height_shift_range",
    "shear_range",
    "zoom_range",
    "horizontal_flip",
    "vertical_flip",
    "fill_mode",
)


def build_model(job: dict):
    import keras

    inputs = keras.Input(tuple(job["input_shape"]))  # H, W, C
    x, head = inputs, "softmax"
    for entry in job["layers"]:
        ((kind, params),) = entry.items()
        x = getattr(keras.layers, kind)(**params)(x)
        if kind == "Dense" and params.get("activation") == "sigmoid":
            head = "sigmoid"
    return keras.Model(inputs, x), head


def optimizer(cfg: dict):
    import keras

    name, lr = cfg["name"], cfg["lr"]
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.get("momentum", 0.0))
    classes = {
        "rmsprop": keras.optimizers.RMSprop,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
    }
    return classes[name](learning_rate=lr)


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.records: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            accuracy = float((logs or {}).get("val_accuracy", float("nan")))
            self.records.append({"seconds": seconds, "val_accuracy": accuracy})

    return EpochTimer()


def memory_mb(field: str) -> float:
    """VmHWM (peak since exec; ru_maxrss would count the parent's too) or VmRSS, in MB."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return 0.0


def gpu_peak_mb(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def train(job: dict, generator_class: type) -> dict:
    import keras
    import numpy as np

    keras.utils.set_random_seed(job["seed"])
    x_train = np.load(job["arrays"]["x_train_nhwc"])
    y_train = np.load(job["arrays"]["y_train"])
    x_val = np.load(job["arrays"]["x_val_nhwc"]).astype("float32") / 255
    y_val = np.load(job["arrays"]["y_val"])
    model, head = build_model(job)
    loss = "binary_crossentropy" if head == "sigmoid" else "sparse_categorical_crossentropy"
    model.compile(optimizer=optimizer(job["optimizer"]), loss=loss, metrics=["accuracy"])
    params = {k: v for k, v in job["augment"].items() if k in GENERATOR_KEYS}
    generator = generator_class(**params, rescale=1 / 255)
    timer = epoch_timer()
    model.fit(
        generator.flow(x_train, y_train, batch_size=job["batch_size"], seed=job["seed"]),
        epochs=job["epochs"],
        validation_data=(x_val, y_val),
        validation_batch_size=job["val_batch_size"],
        callbacks=[timer],
        verbose=0,
    )
    return {
        "records": timer.records,
        "params": int(model.count_params()),
        "train_images": len(y_train),
        "val_images": len(y_val),
    }


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: keras_train_peer.py JOB.json [JOB.json ...]", file=sys.stderr)
        return 2
    jobs = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            jobs.append(json.load(handle))
    limit_threads(jobs[0]["threads"])
    device = "cpu"
    if torch_backend():  # the GPU image: Keras on PyTorch, which puts the model on CUDA
        import torch

        torch.set_num_threads(jobs[0]["threads"])
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(jobs[0]["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(jobs[0]["threads"])
    import keras

    generator_class, source = image_data_generator()
    baseline = memory_mb("VmRSS")
    about = versions(source)
    for job in jobs:
        found = train(job, generator_class) | {
            "workload": job["workload"],
            "pipeline": "keras",
            "device": device,
            "rss_mb": memory_mb("VmHWM"),
            "import_rss_mb": baseline,
            "gpu_peak_mb": gpu_peak_mb(device),
            "versions": about,
        }
        print(json.dumps(found), flush=True)
        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
