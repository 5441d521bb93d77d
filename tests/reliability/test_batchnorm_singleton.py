"""M10: BatchNormalization after Dense trains when the last batch of an epoch holds one sample,
as in Keras (PyTorch refuses it): the batch is kept and handled as Keras handles it."""

from __future__ import annotations

import math

import torch

import cnnlab
from cnnlab.config_io import load_experiment
from cnnlab.data.pipeline import load_data
from cnnlab.models.layers import BatchNormalization

DENSE_BATCHNORM = [
    {"Flatten": {}},
    {"Dense": {"units": 16, "activation": "relu"}},
    {"BatchNormalization": {"momentum": 0.5}},  # moving statistics settle in 2 epochs
    {"Dense": {"units": 10, "activation": "softmax"}},
]


def test_a_batch_of_one_gives_beta_and_keeps_the_moving_statistics_finite():
    norm = BatchNormalization(3, momentum=0.99, epsilon=1e-3)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    sample = torch.tensor([[4.0, -2.0, 10.0]], requires_grad=True)

    out = norm.train()(sample)
    out.sum().backward()

    assert torch.equal(out.detach(), norm.bias.detach()[None])  # Keras: (x - x) / sd * g + b
    assert torch.allclose(norm.running_mean, 0.01 * sample.detach()[0])
    assert torch.allclose(norm.running_var, torch.full((3,), 0.99))
    assert sample.grad is not None and torch.isfinite(sample.grad).all()
    assert int(norm.num_batches_tracked) == 1


def test_dense_batchnorm_trains_with_a_last_batch_of_one(digits_yaml):
    config = digits_yaml(train={"epochs": 2})
    experiment = load_experiment(config)
    images = len(load_data(experiment.data, experiment.seed).splits["train"].labels)
    batch = next(size for size in range(64, 1, -1) if images % size == 1)  # one left over
    experiment = load_experiment(
        config,
        [f"train.batch_size={batch}", f"model.layers={DENSE_BATCHNORM}".replace("'", '"')],
    )

    result = cnnlab.run(experiment, quiet=True)

    history = (result.folder / "history.csv").read_text(encoding="utf-8").splitlines()
    assert len(history) == 3
    assert all(math.isfinite(float(v)) for row in history[1:] for v in row.split(","))
    assert result.metrics["test"]["accuracy"] > 0.3  # 10 classes: it learnt, not just ran
