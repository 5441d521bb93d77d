"""cnnlab: image-classification experiments with convolutional networks."""

__version__ = "0.1.0"
