"""study.csv, study.md and study.tex: the study's tables as a paper takes them."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from cnnlab.study.paper import number, pvalue, tex_escape, write_paper_tables


def summary(mean: float, std: float | None, low: float | None, high: float | None, n: int = 3):
    return {"n": n, "mean": mean, "std": std, "ci95": [low, high]}


def sample_study() -> dict[str, Any]:
    """A hand-written study.json with something for every section of the page and the paper."""
    runs = [
        ("carlosnet-base", {"model.name": "carlosnet"}, None),
        ("ivannet_s1", {"model.name": "ivannet", "augment.preset": "seed1"}, 2),
        ("basenet & 50%", {"model.name": "basenet"}, None),
    ]
    cells = [
        {
            "name": name,
            "overrides": overrides,
            "runs": [
                {
                    "seed": seed,
                    "folder": f"{name}/seed{seed}",
                    "status": "failed" if seed == failed else "finished",
                    "error": "CUDA out of memory at epoch 3" if seed == failed else None,
                    "report": None if seed == failed else f"{name}/seed{seed}/report.html",
                }
                for seed in (0, 1, 2)
            ],
        }
        for name, overrides, failed in runs
    ]
    accuracy_rows = [
        {
            "cell": "carlosnet-base",
            "summary": summary(0.97, 0.01, 0.95, 0.99),
            "values": [0.96, 0.97, 0.98],
            "best": True,
            "vs_best": None,
        },
        {
            "cell": "ivannet_s1",
            "summary": summary(0.9123, 0.0042, 0.8746, 0.95, n=2),
            "values": [0.9093, 0.9153, None],
            "best": False,
            "vs_best": {
                "paired": {"method": "t", "n": 2, "statistic": 8.2, "p": 0.077},
                "mcnemar": {"only_a": 10, "only_b": 2, "p": 0.0386},
                "p_holm": 0.0772,
                "significant": False,
            },
        },
        {
            "cell": "basenet & 50%",
            "summary": summary(0.8012, 0.0203, 0.7508, 0.8516),
            "values": [0.7801, 0.8031, 0.8204],
            "best": False,
            "vs_best": {
                "paired": {"method": "t", "n": 3, "statistic": 14.0, "p": 0.0051},
                "mcnemar": None,
                "p_holm": 0.0102,
                "significant": True,
            },
        },
    ]
    loss_rows = [
        {
            "cell": "carlosnet-base",
            "summary": summary(0.1234, 0.02, 0.0737, 0.1731),
            "values": [0.11, 0.1234, 0.1368],
            "best": True,
            "vs_best": None,
        },
        {
            "cell": "ivannet_s1",
            "summary": summary(0.3, None, None, None, n=1),
            "values": [0.3, None, None],
            "best": False,
            "vs_best": {"paired": None, "mcnemar": None, "p_holm": None, "significant": None},
        },
    ]
    epochs = [1, 2, 3, 4]

    def band(start: float, step: float) -> dict[str, list[float]]:
        return {"mean": [start + step * k for k in range(4)], "std": [0.02, 0.02, 0.01, 0.01]}

    curves = {
        name: {
            "epoch": epochs,
            "loss": band(1.0 + k / 10, -0.2),
            "val_loss": band(1.1 + k / 10, -0.15),
            "accuracy": band(0.5 - k / 10, 0.12),
            "val_accuracy": band(0.45 - k / 10, 0.1),
        }
        for k, name in enumerate(["carlosnet-base", "ivannet_s1"])
    }
    curves["basenet & 50%"] = {"epoch": epochs, "val_accuracy": {"mean": [0.3, 0.4, None, 0.6]}}
    return {
        "study": "s1_study",
        "file": "examples/s1_study.yaml",
        "created": "2026-12-01T12:00:00+00:00",
        "cnnlab": "0.1.0",
        "kind": "grid",
        "seeds": [0, 1, 2],
        "alpha": 0.05,
        "paired_test": "t",
        "cells": cells,
        "tables": [
            {
                "metric": "accuracy",
                "split": "test",
                "title": "Test accuracy",
                "higher_is_better": True,
                "rows": accuracy_rows,
                "notes": ["with 3 seeds the t-test sees only large, consistent differences"],
            },
            {
                "metric": "loss",
                "split": "test",
                "title": "Test loss",
                "higher_is_better": False,
                "rows": loss_rows,
                "notes": [],
            },
        ],
        "cross_evaluation": {
            "metric": "accuracy",
            "sets": ["test", "augmented_test"],
            "rows": [
                {
                    "cell": "carlosnet-base",
                    "values": [summary(0.97, 0.01, 0.95, 0.99), summary(0.81, 0.03, 0.74, 0.88)],
                },
                {
                    "cell": "ivannet_s1",
                    "values": [summary(0.9123, 0.0042, 0.87, 0.95), None],
                },
            ],
        },
        "ladder": {
            "metric": "val_accuracy",
            "min_delta": 0.005,
            "steps": [
                {
                    "name": "featurewise",
                    "overrides": {"augment.featurewise_center": True},
                    "cell": "01-featurewise",
                    "summary": summary(0.412, 0.004, 0.402, 0.422),
                    "reference": summary(0.4, 0.005, 0.388, 0.412),
                    "delta": 0.012,
                    "adopted": True,
                    "reason": "mean val_accuracy 0.412 vs 0.400: +0.012 > min_delta 0.005",
                },
                {
                    "name": "dropout",
                    "overrides": {"model.dropout": 0.5},
                    "cell": "02-dropout",
                    "summary": summary(0.414, 0.006, 0.399, 0.429),
                    "reference": summary(0.412, 0.004, 0.402, 0.422),
                    "delta": 0.002,
                    "adopted": False,
                    "reason": "mean val_accuracy 0.414 vs 0.412: +0.002 <= min_delta 0.005",
                },
            ],
            "final": {
                "cell": "01-featurewise",
                "overrides": {"augment.featurewise_center": True},
                "test": {
                    "summary": summary(0.4055, 0.0071, 0.388, 0.423),
                    "values": [0.4, 0.403, 0.4135],
                },
                "note": "The test split was evaluated once, for the final configuration only.",
            },
        },
        "curves": curves,
        "diagnosis": {
            "ivannet_s1": [
                {
                    "kind": "overfitting",
                    "title": "Over-fitting from epoch 3",
                    "text": "val_loss rises while loss falls.",
                    "advice": "Add augmentation or stop early.",
                }
            ],
            "carlosnet-base": [],
        },
        "failures": [{"cell": "ivannet_s1", "seed": 2, "error": "CUDA out of memory at epoch 3"}],
    }


def written(tmp_path: Path) -> dict[str, Path]:
    return {path.name: path for path in write_paper_tables(sample_study(), tmp_path)}


def test_paper_tables_are_three_files_in_the_folder(tmp_path: Path) -> None:
    files = written(tmp_path)

    assert sorted(files) == ["study.csv", "study.md", "study.tex"]
    assert all(path.parent == tmp_path and path.stat().st_size > 0 for path in files.values())


def test_csv_parses_back_with_the_same_numbers(tmp_path: Path) -> None:
    rows = list(csv.DictReader(written(tmp_path)["study.csv"].open(encoding="utf-8")))
    study = sample_study()

    assert len(rows) == 5  # 3 cells in the accuracy table, 2 in the loss table
    assert list(rows[0])[-3:] == ["seed_0", "seed_1", "seed_2"]
    for row, (table, expected) in zip(
        rows, [(t, r) for t in study["tables"] for r in t["rows"]], strict=True
    ):
        assert (row["title"], row["metric"], row["split"]) == (
            "Test " + table["metric"],
            table["metric"],
            "test",
        )
        assert row["cell"] == expected["cell"]
        assert int(row["n"]) == expected["summary"]["n"]
        assert float(row["mean"]) == expected["summary"]["mean"]
        for key, value in (("std", expected["summary"]["std"]),
                           ("ci_low", expected["summary"]["ci95"][0]),
                           ("ci_high", expected["summary"]["ci95"][1])):  # fmt: skip
            assert (float(row[key]) if row[key] else None) == value
        seeds = [float(row[f"seed_{k}"]) if row[f"seed_{k}"] else None for k in (0, 1, 2)]
        assert seeds == expected["values"]
        versus = expected["vs_best"] or {}
        assert (float(row["p_holm"]) if row["p_holm"] else None) == versus.get("p_holm")
    assert [row["significant"] for row in rows] == ["", "false", "true", "", ""]


def test_markdown_has_one_table_per_entry_with_the_best_in_bold(tmp_path: Path) -> None:
    text = written(tmp_path)["study.md"].read_text(encoding="utf-8")

    assert "## Test accuracy" in text and "## Test loss" in text
    assert "| cell | mean ± std | 95 % CI | p (Holm) |" in text
    assert "| **carlosnet-base** | **0.9700 ± 0.0100** | **[0.9500, 0.9900]** | **best** |" in text
    assert "| ivannet_s1 | 0.9123 ± 0.0042 | [0.8746, 0.9500] | 0.077 |" in text
    assert "| basenet & 50% | 0.8012 ± 0.0203 | [0.7508, 0.8516] | 0.010 |" in text
    assert "- with 3 seeds the t-test sees only large, consistent differences" in text
    assert (
        "Cross-evaluation" in text
        and "| carlosnet-base | 0.9700 ± 0.0100 | 0.8100 ± 0.0300 |" in text
    )
    assert "| featurewise | augment.featurewise_center=True |" in text and "rejected" in text
    assert "The test split was evaluated once" in text


def test_latex_uses_booktabs_escapes_and_balances_braces(tmp_path: Path) -> None:
    text = written(tmp_path)["study.tex"].read_text(encoding="utf-8")

    tables = 4  # two metric tables, the cross-evaluation, the ladder
    for command in (r"\begin{table}", r"\end{table}", r"\toprule", r"\midrule", r"\bottomrule"):
        assert text.count(command) == tables, command
    assert r"\caption{Test accuracy}" in text
    assert r"\textbf{carlosnet-base} & \textbf{0.9700 $\pm$ 0.0100}" in text
    assert r"ivannet\_s1 & 0.9123 $\pm$ 0.0042" in text
    assert r"basenet \& 50\%" in text
    body = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
    bare = re.sub(r"\\[_%&#${}]", "", body).replace(" & ", " ")  # less escapes, column breaks
    assert not re.search(r"[_%#&]", bare), "a special character is not escaped"
    unescaped = re.sub(r"\\[{}]", "", body)
    depth = 0
    for char in unescaped:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0


def test_numbers_follow_one_rule() -> None:
    assert number(0.976712) == "0.9767"
    assert number(None) == "\u2013"
    assert pvalue(0.03862) == "0.039"
    assert pvalue(0.00001) == "<0.001"
    assert tex_escape("a_b 5% {x} #1 $2 & c") == r"a\_b 5\% \{x\} \#1 \$2 \& c"
