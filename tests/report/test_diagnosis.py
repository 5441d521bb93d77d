"""The learning curves in words: synthetic histories whose diagnosis is known."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from cnnlab.report import Finding, diagnose, render_report

NAN = math.nan


def history(**columns: list[float]) -> dict[str, list[float]]:
    """A history as read_history returns it; val columns NaN when not given."""
    epochs = len(columns["loss"])
    blank = [NAN] * epochs
    return (
        {"epoch": [float(e) for e in range(1, epochs + 1)], "lr": [0.001] * epochs}
        | {name: blank for name in ("accuracy", "val_loss", "val_accuracy")}
        | columns
    )


def converging(epochs: int, start: float, end: float, rate: float = 0.5) -> list[float]:
    """From `start` towards `end`, exponentially: the shape of a loss that has settled."""
    return [end + (start - end) * math.exp(-rate * (e - 1)) for e in range(1, epochs + 1)]


def kinds(findings: list[Finding]) -> list[str]:
    return [finding.kind for finding in findings]


def test_a_clean_converged_curve_is_only_healthy() -> None:
    findings = diagnose(
        history(
            loss=converging(20, 1.2, 0.10),
            accuracy=converging(20, 0.40, 0.97),
            val_loss=converging(20, 1.1, 0.30),
            val_accuracy=converging(20, 0.45, 0.93),
        )
    )
    assert kinds(findings) == ["healthy"]
    assert "validation accuracy 0.93" in findings[0].text
    assert findings[0].numbers["final_val_loss"] == findings[0].numbers["best_val_loss"]


def test_validation_loss_turning_up_while_training_loss_falls_is_overfitting() -> None:
    # falling to 0.412 at epoch 7, then rising steadily to 0.583 at epoch 20
    val_loss = [*np.linspace(1.0, 0.412, 7), *np.linspace(0.412, 0.583, 14)[1:]]
    findings = diagnose(
        history(
            loss=list(np.geomspace(1.0, 0.05, 20)),
            accuracy=list(np.linspace(0.5, 0.99, 20)),
            val_loss=val_loss,
            val_accuracy=[*np.linspace(0.5, 0.88, 7), *np.linspace(0.88, 0.86, 13)],
        )
    )
    assert kinds(findings) == ["overfitting"]
    (finding,) = findings
    assert finding.numbers["best_epoch"] == 7
    assert finding.text.startswith(
        "Validation loss is lowest at epoch 7 (0.412) and rises to 0.583 by epoch 20 (+42 %) "
        "while training loss falls from"
    )
    assert finding.text.endswith(
        "at the end training accuracy is 0.99 and validation accuracy 0.86 (gap 0.13)."
    )
    assert "train.early_stopping" in finding.advice and "augment.preset" in finding.advice
    assert "Dropout" in finding.advice and "weight_decay" in finding.advice


def test_one_bad_last_epoch_is_not_called_overfitting() -> None:
    val_loss = [*converging(19, 1.0, 0.40, rate=0.9), 0.60]  # a single spike at the end
    findings = diagnose(
        history(
            loss=converging(20, 1.0, 0.1), accuracy=converging(20, 0.5, 0.98), val_loss=val_loss
        )
    )
    assert "overfitting" not in kinds(findings)


def test_low_flat_training_accuracy_is_underfitting() -> None:
    findings = diagnose(
        history(
            loss=converging(15, 1.6, 1.05),
            accuracy=converging(15, 0.30, 0.61),
            val_loss=converging(15, 1.6, 1.10),
            val_accuracy=converging(15, 0.30, 0.58),
        )
    )
    assert kinds(findings) == ["underfitting"]
    assert "Training accuracy ends at 0.61" in findings[0].text
    assert "0.90" in findings[0].text  # the threshold is stated
    assert "train.optimizer.lr" in findings[0].advice


def test_zigzagging_validation_accuracy_is_instability() -> None:
    findings = diagnose(
        history(
            loss=converging(12, 1.0, 0.15),
            accuracy=converging(12, 0.5, 0.96),
            val_loss=[0.9, 0.7, 0.6, 0.8, 0.6, 0.8, 0.6, 0.8, 0.6, 0.8, 0.6, 0.8],
            val_accuracy=[0.5, 0.7, 0.8, 0.7, 0.8, 0.7, 0.8, 0.7, 0.8, 0.7, 0.8, 0.7],
        )
    )
    assert kinds(findings) == ["instability"]
    (finding,) = findings
    assert finding.title == "Unstable validation accuracy"
    assert "changes direction in 9 of 10 epoch-to-epoch steps, by 0.1 on average" in finding.text
    assert "train.schedule.name: cosine" in finding.advice


def test_validation_loss_still_falling_at_the_end_is_still_improving() -> None:
    findings = diagnose(
        history(
            loss=list(np.linspace(1.2, 0.3, 10)),
            accuracy=list(np.linspace(0.5, 0.93, 10)),
            val_loss=list(np.linspace(1.1, 0.4, 10)),
            val_accuracy=list(np.linspace(0.5, 0.88, 10)),
        )
    )
    assert kinds(findings) == ["still_improving"]
    assert findings[0].text.startswith("Validation loss is still falling at the end")
    assert "--resume" in findings[0].advice and "train.epochs" in findings[0].advice


def test_fewer_than_three_epochs_are_too_few_to_judge() -> None:
    findings = diagnose(history(loss=[1.0, 0.8], val_loss=[1.0, 0.9]))
    assert kinds(findings) == ["too_few_epochs"]
    assert findings[0].numbers == {"epochs": 2}


def test_without_validation_the_training_curves_are_judged() -> None:
    settled = history(loss=converging(10, 1.0, 0.2, rate=1.0), accuracy=converging(10, 0.5, 0.95))
    (healthy,) = diagnose(settled)
    assert healthy.kind == "healthy"
    assert "validation" not in healthy.text
    assert "training accuracy is 0.95" in healthy.text

    falling = history(loss=list(np.linspace(1.0, 0.3, 8)), accuracy=list(np.linspace(0.5, 0.9, 8)))
    (improving,) = diagnose(falling)
    assert improving.kind == "still_improving"
    assert improving.text.startswith("Training loss is still falling")


def test_to_json_leaves_out_non_finite_numbers() -> None:
    finding = Finding("healthy", "t", "x", "a", {"ok": 0.5, "gap": NAN, "big": math.inf})
    payload = finding.to_json()
    assert payload["numbers"] == {"ok": 0.5}
    json.dumps(payload, allow_nan=False)
    for found in diagnose(history(loss=converging(5, 1.0, 0.2))):
        json.dumps(found.to_json(), allow_nan=False)


def test_the_page_shows_the_diagnosis_under_the_learning_curves(run_folder: Path) -> None:
    html = render_report(run_folder).read_text(encoding="utf-8")
    curves = html[html.find('<section id="curves">') : html.find("</section>")]
    assert '<h3 id="diagnosis">Diagnosis</h3>' in curves
    assert "<b>The curves look sound</b>" in curves
    assert "validation loss is lowest at epoch 4 (0.481)" in curves
    assert "Next: Nothing in the curves asks for a change" in curves


def test_a_features_run_has_no_diagnosis(make_run: Callable[..., Path]) -> None:
    folder = make_run("features")
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    config["classifier"] = {"name": "svm"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    html = render_report(folder).read_text(encoding="utf-8")
    assert "Diagnosis" not in html
