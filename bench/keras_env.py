"""What both Keras peer scripts need before and after Keras loads. Standard library only:
it runs in .venv-bench, beside `keras_peer.py` and `keras_train_peer.py`, which import it as a
sibling (a script's own folder is on its sys.path)."""

from __future__ import annotations

import os
import sys

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)


def limit_threads(threads: int) -> None:
    """Before numpy and TensorFlow load: their pools read these once."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def image_data_generator() -> tuple[type, str]:
    """The class, and where it came from: Keras 2 / early Keras 3 export it publicly; Keras 3.x
    later keeps it (deprecated) only in its tf.keras namespace, which imports without
    TensorFlow (the torch backend on the GPU image), and TensorFlow's own tf.keras has it."""
    try:
        from keras.preprocessing.image import ImageDataGenerator

        return ImageDataGenerator, "keras.preprocessing.image.ImageDataGenerator"
    except ImportError:
        pass
    try:
        from keras._tf_keras.keras.preprocessing.image import ImageDataGenerator

        return ImageDataGenerator, "keras._tf_keras.keras.preprocessing.image.ImageDataGenerator"
    except ImportError:
        import tensorflow as tf

        generator = tf.keras.preprocessing.image.ImageDataGenerator
        return generator, "tf.keras.preprocessing.image.ImageDataGenerator"


def torch_backend() -> bool:
    """Keras on PyTorch (KERAS_BACKEND=torch): on CUDA where there is one, no TensorFlow."""
    return os.environ.get("KERAS_BACKEND") == "torch"


def versions(source: str) -> dict:
    """Keras, TensorFlow (when present), numpy, scipy, Python, and the generator's origin."""
    import keras
    import numpy
    import scipy

    found = {"keras": keras.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__}
    found["backend"] = keras.backend.backend()
    if torch_backend():
        import torch

        return found | {
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "generator": source,
        }
    try:
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
        found["tf_intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    except ImportError:
        pass
    return found | {"python": sys.version.split()[0], "generator": source}
