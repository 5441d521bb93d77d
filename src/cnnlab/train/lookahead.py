"""Lookahead (Zhang et al. 2019, "k steps forward, 1 step back") around any optimiser: timm's
wrapper, imported only by runs that set train.optimizer.lookahead (timm takes seconds to load).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import Lookahead as TimmLookahead


class Lookahead(TimmLookahead):
    """timm's Lookahead, with the slow weights starting from the weights before the first step,
    as the paper's Algorithm 1: phi_1 = phi_0 + alpha (theta_k - phi_0). timm's start from
    the weights after k steps, so its first synchronisation moves nothing. The slow weights are
    the base optimiser's state (`lookahead_slow_buff`) and the step count its param groups',
    so the checkpoint's optimizer entry holds them and a resumed run continues them."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        fresh = [g for g in self.param_groups if g["lookahead_step"] == 0]
        starts = [(g, p, p.clone()) for g in fresh for p in g["params"] if p.grad is not None]
        loss = super().step(closure)
        # SGD reads its state by key; Adam and RMSprop take an empty state for "not started",
        # so theirs get the buffer only once they have stepped
        empty_ok = isinstance(self._base_optimizer, torch.optim.SGD)
        for group, param, phi0 in starts:
            state = self._base_optimizer.state[param]
            if "lookahead_slow_buff" in state:  # k == 1: timm has synchronised to theta_1
                phi0.add_(param - phi0, alpha=group["lookahead_alpha"])
                state["lookahead_slow_buff"].copy_(phi0)
                param.copy_(phi0)
            elif state or empty_ok:
                state["lookahead_slow_buff"] = phi0
        return loss
