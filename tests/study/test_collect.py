"""A study's tables from its runs' numbers: the best cell, paired tests over seeds, McNemar on
the images of every shared seed, Holm across the table, mean curves; and the ladder's rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from cnnlab.study import stats
from cnnlab.study.collect import RunRecord, comparison_table, mean_curves, metric_tables, scores_of
from cnnlab.study.ladder import decide
from cnnlab.study.spec import Statistics

SEEDS = [0, 1, 2]
ACCURACY = {"a": [0.90, 0.92, 0.91], "b": [0.85, 0.88, 0.86], "c": [0.89, 0.93, 0.90]}


def records(correct: dict[str, list[list[bool]]] | None = None) -> dict[str, list[RunRecord]]:
    by_cell = {}
    for cell, values in ACCURACY.items():
        runs = []
        for seed, value in zip(SEEDS, values, strict=True):
            run = RunRecord(cell, seed, Path(cell) / f"seed{seed}", None)
            run.scores["test"] = {"accuracy": value, "macro_f1": value - 0.05, "loss": 1 - value}
            if correct:
                run.correct["test"] = {f"img{k}": ok for k, ok in enumerate(correct[cell][seed])}
            runs.append(run)
        by_cell[cell] = runs
    return by_cell


def test_the_best_cell_is_marked_and_each_other_is_tested_against_it_with_holm():
    table = comparison_table(records(), SEEDS, "test", "accuracy", "accuracy", True, Statistics())
    rows = {row["cell"]: row for row in table["rows"]}
    assert [cell for cell, row in rows.items() if row["best"]] == ["a"]
    assert rows["a"]["vs_best"] is None
    raw = [scipy_stats.ttest_rel(ACCURACY[cell], ACCURACY["a"]).pvalue for cell in ("b", "c")]
    for cell, p in zip(("b", "c"), raw, strict=True):
        assert rows[cell]["vs_best"]["paired"]["p"] == pytest.approx(p)
    adjusted = stats.holm(raw)
    assert [rows[c]["vs_best"]["p_holm"] for c in ("b", "c")] == pytest.approx(adjusted)
    assert rows["b"]["summary"]["mean"] == pytest.approx(sum(ACCURACY["b"]) / 3)
    assert rows["b"]["summary"]["std"] == pytest.approx(scipy_stats.tstd(ACCURACY["b"]))


def test_for_a_loss_the_lowest_is_best():
    table = comparison_table(records(), SEEDS, "test", "loss", "loss", False, Statistics())
    assert [row["cell"] for row in table["rows"] if row["best"]] == ["a"]


def test_mcnemar_pools_the_images_of_every_shared_seed():
    # per seed, 4 images; cell b is wrong where a is right on 2 images of each seed
    right = [[True, True, True, False]] * 3
    worse = [[False, False, True, False]] * 3
    table = comparison_table(
        records({"a": right, "b": worse, "c": right}),
        SEEDS,
        "test",
        "accuracy",
        "accuracy",
        True,
        Statistics(),
    )
    rows = {row["cell"]: row for row in table["rows"]}
    mcnemar = rows["b"]["vs_best"]["mcnemar"]
    assert (mcnemar["only_a"], mcnemar["only_b"]) == (0, 6)
    assert mcnemar["p"] == pytest.approx(scipy_stats.binomtest(0, 6, 0.5).pvalue)
    macro = comparison_table(records(), SEEDS, "test", "macro_f1", "macro F1", True, Statistics())
    assert all(row["vs_best"] is None or row["vs_best"]["mcnemar"] is None for row in macro["rows"])


def test_a_failed_seed_is_left_out_of_its_cells_statistics():
    by_cell = records()
    by_cell["b"][2].error = "boom"
    table = comparison_table(by_cell, SEEDS, "test", "accuracy", "accuracy", True, Statistics())
    row = next(r for r in table["rows"] if r["cell"] == "b")
    assert row["values"][2] is None and row["summary"]["n"] == 2
    assert row["vs_best"]["paired"]["n"] == 2


def test_mean_curves_average_over_seeds_and_count_a_seed_that_stopped_early_until_it_stopped():
    runs = records()["a"]
    runs[0].history = {"loss": [1.0, 0.5, 0.25], "val_loss": [1.2, 0.8, 0.7]}
    runs[1].history = {"loss": [0.8, 0.3], "val_loss": [1.0, 0.6]}
    curves = mean_curves(runs)
    assert curves["epoch"] == [1, 2, 3]
    assert curves["loss"]["mean"] == pytest.approx([0.9, 0.4, 0.25])
    assert curves["loss"]["std"][0] == pytest.approx(scipy_stats.tstd([1.0, 0.8]))
    assert curves["loss"]["std"][2] is None  # one seed left: no spread


@pytest.mark.parametrize(
    ("candidate", "current", "metric", "adopted"),
    [
        ([0.50, 0.52], [0.40, 0.42], "val_accuracy", True),
        ([0.405, 0.425], [0.40, 0.42], "val_accuracy", False),  # +0.005: not above 0.01
        ([0.9, 1.0], [1.2, 1.3], "val_loss", True),  # lower is better
        ([math.nan, math.nan], [0.4, 0.4], "val_accuracy", False),
    ],
)
def test_a_step_is_adopted_only_when_the_mean_improves_by_more_than_min_delta(
    candidate, current, metric, adopted
):
    decision = decide(candidate, current, metric, min_delta=0.01)
    assert decision.adopted is adopted
    assert metric in decision.reason


def test_a_reconstruction_study_tabulates_psnr_and_ssim_and_no_macro_f1():
    by_cell: dict[str, list[RunRecord]] = {}
    for cell, psnr in (("modelo-1", [20.1, 20.4]), ("modelo-2", [18.0, 18.2])):
        by_cell[cell] = []
        for seed, value in enumerate(psnr):
            run = RunRecord(cell, seed, Path(cell) / f"seed{seed}", None)
            metrics = {"accuracy": 0.8, "loss": 0.1, "psnr": value, "ssim": value / 25}
            run.scores["test"] = scores_of(metrics)  # a reconstruction's metrics.json entry
            by_cell[cell].append(run)
    tables = {t["metric"]: t for t in metric_tables(by_cell, [0, 1], ["test"], Statistics())}
    assert list(tables) == ["accuracy", "loss", "psnr", "ssim"]
    assert [row["cell"] for row in tables["psnr"]["rows"] if row["best"]] == ["modelo-1"]
    assert tables["psnr"]["title"] == "Test PSNR (dB)"
