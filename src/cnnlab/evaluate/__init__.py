"""Evaluation: inference over a split, metrics, predictions."""
