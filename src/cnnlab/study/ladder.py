"""S3's ladder: successive improvements of one configuration, each kept only if it helps on
validation, and the test split used once, at the end.

Every cell of a ladder holds its test split out (`evaluate.test: false`: split off as usual,
never evaluated), so no choice can see it. A step's candidate is the configuration adopted so
far plus the step's overrides; it is adopted when the mean of the validation metric over the
seeds improves on the current one by more than `min_delta`. The final configuration's runs
are then evaluated on test (`cnnlab evaluate`, as evaluations/test/), once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cnnlab.study import stats
from cnnlab.study.spec import BASELINE, Cell, Ladder, Study

HOLD_OUT_TEST = {"evaluate.test": False}
FINAL_TEST = "test"  # the final configuration's evaluation name


@dataclass(frozen=True)
class Decision:
    adopted: bool
    delta: float  # the improvement (positive is better, for a loss too)
    reason: str


def decide(
    candidate: Sequence[float], current: Sequence[float], metric: str, min_delta: float
) -> Decision:
    """Adopt the candidate when its mean improves the current mean by more than min_delta
    (a lower loss is an improvement); failed seeds (NaN) do not count."""
    new, old = stats.summarize(candidate).mean, stats.summarize(current).mean
    if math.isnan(new):
        return Decision(False, math.nan, f"no run of the step finished: no mean {metric}")
    better = (old - new) if metric.endswith("loss") else (new - old)
    adopted = better > min_delta
    verdict = ">" if adopted else "<="
    reason = (
        f"mean {metric} {new:.4f} vs {old:.4f}: {better:+.4f} {verdict} min_delta {min_delta:g}"
    )
    return Decision(adopted, better, reason)


def check_steps(study: Study) -> None:
    """Every step's overrides checked before the first run: alone on the base and all
    together (which steps combine depends on the decisions, which come hours later)."""
    assert study.spec.ladder is not None
    steps = study.spec.ladder.steps
    together: dict[str, Any] = {}
    for step in steps:
        study.experiment(Cell(step.name, {**step.set, **HOLD_OUT_TEST}), 0)
        together |= step.set
    study.experiment(Cell("+".join(s.name for s in steps), {**together, **HOLD_OUT_TEST}), 0)


# (cells to run) -> per cell name, the validation metric of each seed (NaN where one failed)
RunCells = Callable[[list[Cell]], dict[str, list[float]]]


def climb(
    ladder: Ladder, base_overrides: dict[str, Any], run_cells: RunCells
) -> tuple[list[Cell], dict[str, Any]]:
    """Run the baseline and each step in order; the cells run and the ladder's record (its
    `final` test result is filled in by the caller, which evaluates test once)."""
    current = Cell(f"00-{BASELINE}", {**base_overrides, **HOLD_OUT_TEST})
    scores = run_cells([current])[current.name]
    cells, steps = [current], []
    for number, step in enumerate(ladder.steps, start=1):
        candidate = Cell(f"{number:02d}-{step.name}", {**current.overrides, **step.set})
        candidate_scores = run_cells([candidate])[candidate.name]
        cells.append(candidate)
        decision = decide(candidate_scores, scores, ladder.metric, ladder.min_delta)
        steps.append(
            {
                "name": step.name,
                "overrides": step.set,
                "cell": candidate.name,
                "summary": stats.summarize(candidate_scores).to_json(),
                "reference": stats.summarize(scores).to_json(),
                "reference_cell": current.name,
                "delta": decision.delta if math.isfinite(decision.delta) else None,
                "adopted": decision.adopted,
                "reason": decision.reason,
            }
        )
        if decision.adopted:
            current, scores = candidate, candidate_scores
    final = {
        "cell": current.name,
        "overrides": {k: v for k, v in current.overrides.items() if k not in HOLD_OUT_TEST},
        "test": None,
        "note": "The test split was evaluated once, for the final configuration only; every "
        "choice above was made on validation.",
    }
    record = {"metric": ladder.metric, "min_delta": ladder.min_delta, "steps": steps}
    return cells, {**record, "final": final}
