"""TPE that draws one trial at random after a failed one.

TPE learns from complete and pruned trials only: a trial that failed (an invalid combination
of sampled values) leaves its model as it was, so it proposes the same invalid corner again,
and again. One random trial after each failure leaves that loop; its result teaches TPE
like any other. Imported only once Optuna is known to be installed (cnnlab.sweep.storage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class RandomAfterFailure(BaseSampler):
    def __init__(self, main: BaseSampler, fallback: BaseSampler):
        self.main, self.fallback = main, fallback
        self.failed = False  # this worker's last trial failed: the next is drawn by `fallback`

    def _now(self) -> BaseSampler:
        return self.fallback if self.failed else self.main

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._now().infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._now().sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._now().sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._now().before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._now().after_trial(study, trial, state, values)
        self.failed = state == TrialState.FAIL

    def reseed_rng(self) -> None:
        self.main.reseed_rng()
        self.fallback.reseed_rng()
