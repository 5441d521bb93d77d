"""Tests of cnnlab.train: optimisers, schedules, the objective, the loop and its callbacks."""
