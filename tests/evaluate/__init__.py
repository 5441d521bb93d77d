"""Tests of cnnlab.evaluate: metrics and inference."""
