"""Training: the fit loop, optimisers and schedules, callbacks, checkpoints, runtime."""
