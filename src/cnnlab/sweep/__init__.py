"""Hyper-parameter sweeps on Optuna: a base experiment, a search space over its dotted keys, a
study in a database any number of workers share; each trial an ordinary run folder."""
