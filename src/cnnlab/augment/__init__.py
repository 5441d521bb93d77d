"""Batched augmentation: Keras-equivalent transforms, modern policies, normalisation."""
