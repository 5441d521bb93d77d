"""train.optimizer.groups / no_decay (parameter groups) and lookahead (timm's, seeded)."""

from __future__ import annotations

import copy

import pytest
import torch

from cnnlab.config import OptimizerConfig
from cnnlab.errors import ConfigError
from cnnlab.models import build_layers, build_model
from cnnlab.train.lookahead import Lookahead
from cnnlab.train.optim import build_optimizer

LAYERS = [
    {"Conv2D": {"filters": 4, "kernel_size": 3}},
    "BatchNormalization",
    "Flatten",
    {"Dense": {"units": 3, "activation": "softmax"}},
]


def model() -> torch.nn.Module:
    return build_layers(LAYERS, (6, 6, 1))


def groups_of(optimizer: torch.optim.Optimizer, net: torch.nn.Module) -> dict[str, tuple]:
    """{group name: (parameter names, lr, weight decay)}."""
    names = {id(p): n for n, p in net.named_parameters()}
    return {
        g["name"]: (sorted(names[id(p)] for p in g["params"]), g["lr"], g["weight_decay"])
        for g in optimizer.param_groups
    }


def test_no_decay_puts_batchnorm_and_bias_params_apart_with_weight_decay_zero():
    net = model()
    cfg = OptimizerConfig(name="sgd", lr=0.1, weight_decay=5e-4, no_decay=["bias", "batchnorm"])
    groups = groups_of(build_optimizer(net.parameters(), cfg, net), net)
    assert groups == {
        "all": (["conv2d.weight", "dense.weight"], 0.1, 5e-4),
        "all no_decay": (
            ["batch_normalization.bias", "batch_normalization.weight", "conv2d.bias", "dense.bias"],
            0.1,
            0.0,
        ),
    }
    assert (
        sum(len(g["params"]) for g in build_optimizer(net.parameters(), cfg, net).param_groups) == 6
    )


def test_a_group_sets_its_own_lr_scale_and_decay_and_the_first_match_wins():
    net = model()
    cfg = OptimizerConfig(
        name="sgd",
        lr=0.1,
        weight_decay=1e-3,
        no_decay=["bias"],
        groups=[
            {"params": ["batchnorm"], "lr_scale": 64, "weight_decay": 1e-5},
            {"params": ["dense.*", "batchnorm"], "lr_scale": 0.5},  # BatchNorm went to group 0
        ],
    )
    groups = groups_of(build_optimizer(net.parameters(), cfg, net), net)
    assert list(groups) == [
        "all",
        "all no_decay",
        "all groups.0",
        "all groups.1",
        "all groups.1 no_decay",
    ]
    assert groups["all"] == (["conv2d.weight"], 0.1, 1e-3)
    assert groups["all no_decay"] == (["conv2d.bias"], 0.1, 0.0)
    assert groups["all groups.0"] == (
        ["batch_normalization.bias", "batch_normalization.weight"],
        pytest.approx(6.4),
        1e-5,
    )
    # no weight_decay of its own: the optimiser's, except where no_decay says 0
    assert groups["all groups.1"] == (["dense.weight"], pytest.approx(0.05), 1e-3)
    assert groups["all groups.1 no_decay"] == (["dense.bias"], pytest.approx(0.05), 0.0)


def test_groups_keep_the_stage_groups_lr_and_name():
    net = model()
    dense = [p for n, p in net.named_parameters() if n.startswith("dense")]
    rest = [p for n, p in net.named_parameters() if not n.startswith("dense")]
    stage = [{"params": dense, "lr": 0.01, "name": "head"}, {"params": rest, "lr": 0.001}]
    cfg = OptimizerConfig(name="adamw", weight_decay=0.05, no_decay=["bias", "norm"])
    groups = groups_of(build_optimizer(stage, cfg, net), net)
    assert groups["head"] == (["dense.weight"], 0.01, 0.05)
    assert groups["head no_decay"] == (["dense.bias"], 0.01, 0.0)
    assert groups["all"] == (["conv2d.weight"], 0.001, 0.05)


def test_a_glob_that_names_no_parameter_is_a_config_error_naming_the_key():
    net = model()
    cfg = OptimizerConfig(groups=[{"params": ["dense_1.*"], "lr_scale": 2}])
    with pytest.raises(ConfigError) as caught:
        build_optimizer(net.parameters(), cfg, net)
    assert "train.optimizer.groups.0.params: 'dense_1.*' names no parameter" in str(caught.value)
    assert "batch_normalization, conv2d, dense" in str(caught.value)


def test_without_groups_the_optimizer_is_unchanged():
    net = model()
    optimizer = build_optimizer(net.parameters(), OptimizerConfig(name="sgd"), net)
    assert len(optimizer.param_groups) == 1 and "name" not in optimizer.param_groups[0]


def test_airbench_batchnorm_group_holds_only_the_offsets():
    net = build_model("airbench", (32, 32, 3), 10)
    cfg = OptimizerConfig(name="sgd", lr=1.0, groups=[{"params": ["batchnorm"], "lr_scale": 64}])
    groups = groups_of(build_optimizer(net.parameters(), cfg, net), net)
    assert len(groups["all groups.0"][0]) == 6  # one offset per BatchNorm, no scales
    assert all(name.endswith(".bias") for name in groups["all groups.0"][0])


# --- lookahead ---------------------------------------------------------------------------------


def train_steps(net: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(8, 3, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        optimizer.step()


def weights(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize(("name", "k"), [("sgd", 3), ("adam", 3), ("sgd", 1)])
def test_lookahead_slow_weights_after_k_steps_follow_the_papers_formula(name, k):
    alpha = 0.4
    torch.manual_seed(0)
    net, plain = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    plain.load_state_dict(net.state_dict())
    start = weights(net)
    base = OptimizerConfig(name=name, lr=0.1, momentum=0.9 if name == "sgd" else 0.0)
    switched = OptimizerConfig(**{**base.model_dump(), "lookahead": True})
    wrapped = build_optimizer(net.parameters(), switched)
    assert wrapped.param_groups[0]["lookahead_k"] == 5  # lookahead: true is the paper's k, alpha
    looked = OptimizerConfig(**{**base.model_dump(), "lookahead": {"k": k, "alpha": alpha}})
    optimizer = build_optimizer(net.parameters(), looked)
    assert isinstance(optimizer, Lookahead)
    train_steps(net, optimizer, k)
    train_steps(plain, build_optimizer(plain.parameters(), base), k)  # the fast weights alone
    for slow, phi0, theta_k in zip(weights(net), start, weights(plain), strict=True):
        # phi_1 = phi_0 + alpha (theta_k - phi_0), and training goes on from phi_1
        assert torch.allclose(slow, phi0 + alpha * (theta_k - phi0), atol=1e-6)
    state = optimizer.state_dict()
    assert state["param_groups"][0]["lookahead_step"] == k
    assert all("lookahead_slow_buff" in s for s in state["state"].values())


def test_lookahead_resumes_from_its_state_dict_bitwise():
    torch.manual_seed(0)
    cfg = OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, lookahead={"k": 4, "alpha": 0.5})
    whole, resumed = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    resumed.load_state_dict(whole.state_dict())
    optimizer = build_optimizer(whole.parameters(), cfg)
    train_steps(whole, optimizer, 6)
    saved = copy.deepcopy({"model": whole.state_dict(), "optimizer": optimizer.state_dict()})
    train_steps(whole, optimizer, 6)

    first = build_optimizer(resumed.parameters(), cfg)
    train_steps(resumed, first, 6)
    again = build_optimizer(resumed.parameters(), cfg)  # a new process: from the checkpoint
    resumed.load_state_dict(saved["model"])
    again.load_state_dict(saved["optimizer"])
    train_steps(resumed, again, 6)
    assert all(torch.equal(a, b) for a, b in zip(weights(whole), weights(resumed), strict=True))


def test_a_warm_up_of_a_fractional_step_count_never_overshoots_the_lr():
    from cnnlab.config import ScheduleConfig
    from cnnlab.train.optim import build_schedule

    optimizer = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    # 2 steps an epoch, warm-up 2.3 epochs = 4.6 steps: step 4 is still warming up
    schedule = build_schedule(
        optimizer, ScheduleConfig(name="onecycle", warmup_epochs=2.3), 0, 2, 4
    )
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert max(lrs) <= 1.0 and lrs[4] == pytest.approx(1.0)
