"""The report's interpretation of real runs (report.interpret): the misclassified gallery counts
every mistake the confusion matrix counts and shows the highest losses first; the penultimate
features of the test split are embedded; Grad-CAM panels of right and wrong images; a features
run embeds its classifier's features and has no Grad-CAM; the page is written again from the
folder alone; report.interpret: false leaves it all out."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cnnlab.data.pipeline import Split
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.gallery import gallery, top_losses
from cnnlab.runs.interpretation_cam import confident_right
from cnnlab.runs.rerender import rewrite_report
from cnnlab.task.classification import split_metrics

GALLERY_COUNT = re.compile(r"(\d+) of (\d+) shown")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, train_digits) -> Path:
    """One epoch on scikit-learn's digits: a poor network (most of 359 test images wrong)."""
    return train_digits(tmp_path_factory.mktemp("interpretation"))


def read(folder: Path, name: str) -> Any:
    text = (folder / name).read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else text


def split_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["split"] == "test"]


def off_diagonal(matrix: list[list[int]]) -> int:
    counts = np.asarray(matrix)
    return int(counts.sum() - np.trace(counts))


def gallery_paths(html: str) -> list[str]:
    part = html[html.find('<section id="misclassified">') :]
    return re.findall(r'<figure title="([^"]*)">', part[: part.find("</section>")])


# --- the gallery ----------------------------------------------------------------------------------


def test_top_losses_put_the_most_confident_mistakes_first() -> None:
    labels = np.array([0, 1, 2, 0, 1])
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],  # right
            [0.6, 0.3, 0.1],  # wrong, p(true) 0.3
            [0.01, 0.98, 0.01],  # wrong, p(true) 0.01: the most confident mistake
            [0.2, 0.7, 0.1],  # wrong, p(true) 0.2
            [0.1, 0.8, 0.1],  # right
        ]
    )
    order, losses = top_losses(labels, probabilities)
    assert order.tolist() == [2, 3, 1]
    assert np.allclose(losses, -np.log([0.01, 0.2, 0.3]))


def test_gallery_count_is_the_confusion_matrix_off_diagonal_sum_beyond_the_32_shown() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    probabilities = rng.dirichlet(np.ones(4), 200)
    classes = ["a", "b", "c", "d"]
    split = Split(
        "test", np.zeros((200, 1, 8, 8), np.uint8), labels, [str(k) for k in range(200)], classes
    )
    matrix = split_metrics(labels, probabilities, classes, 1.0, 2)["confusion_matrix"]

    shown = gallery(split, probabilities, by_loss=True)

    assert shown.total == off_diagonal(matrix) > 100
    assert len(shown.images) == len(shown.paths) == 32
    assert shown.loss == sorted(shown.loss or [], reverse=True)
    in_file_order = gallery(split, probabilities, by_loss=False)
    assert in_file_order.total == shown.total and in_file_order.loss is None
    assert [int(p) for p in in_file_order.paths] == sorted(int(p) for p in in_file_order.paths)


def test_right_panels_take_the_most_confident_of_each_class_in_turn() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    probabilities = np.eye(3)[labels] * np.array([0.9, 0.8, 0.99, 0.7, 0.95, 0.6])[:, None]
    probabilities[:, 0] += 0.001 * (labels != 0)  # below every true class
    assert confident_right(labels, probabilities, limit=4).tolist() == [2, 4, 5, 0]


def test_the_page_counts_every_mistake_and_shows_the_highest_losses_first(digits_run) -> None:
    html = read(digits_run, "report.html")
    mistakes = off_diagonal(read(digits_run, "metrics.json")["test"]["confusion_matrix"])

    found = GALLERY_COUNT.search(html)
    assert found, "no gallery count"
    assert (int(found[1]), int(found[2])) == (32, mistakes)
    assert mistakes > 32  # the old gallery said "32 of 32"
    assert "highest loss first" in html
    shown = [float(x) for x in re.findall(r"<br>loss (\d+\.\d+)", html)]
    assert len(shown) == 32 and shown == sorted(shown, reverse=True)
    rows = split_rows(digits_run)
    losses = sorted(
        (
            -math.log(float(row[f"p_{row['label']}"]))
            for row in rows
            if row["label"] != row["predicted"]
        ),
        reverse=True,
    )
    assert np.allclose(shown, losses[:32], atol=0.006)  # the highest of every test image


def test_the_test_split_is_embedded_and_grad_cam_drawn(digits_run) -> None:
    saved = read(digits_run, "interpretation.json")
    rows = split_rows(digits_run)
    classes = saved["classes"]

    embedding = saved["embedding"]
    assert saved["split"] == "test" and embedding["images"] == len(rows) < 500
    assert embedding["index"] == list(range(len(rows)))  # under the cap: every image
    assert embedding["label"] == [classes.index(row["label"]) for row in rows]
    assert embedding["predicted"] == [classes.index(row["predicted"]) for row in rows]
    assert embedding["dimension"] == 6 * 6 * 4  # Flatten, the Dense head's input
    assert {"PCA", "t-SNE"} <= set(embedding["coordinates"])
    labels = np.asarray(embedding["label"])
    for method, xy in embedding["coordinates"].items():
        points = np.asarray(xy)
        assert points.shape == (len(rows), 2) and np.abs(points).max() == 1.0
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        same = (labels[distances.argmin(1)] == labels).mean()
        # a point's nearest neighbour mostly shares its class (chance: 1 in 10); t-SNE keeps
        # neighbourhoods (0.97 here), PCA's two directions only some of them (0.53)
        assert same > (0.8 if method == "t-SNE" else 0.3), method

    cam = saved["cam"]
    assert cam["layer"] == "conv2d" and len(cam["tiles"]) == 8
    assert [tile["correct"] for tile in cam["tiles"]] == [True] * 4 + [False] * 4
    html = read(digits_run, "report.html")
    assert [t["path"] for t in cam["tiles"][4:]] == gallery_paths(html)[:4]  # highest loss
    part = html[html.find('<section id="interpretation">') :]
    assert "Grad-CAM at conv2d" in part
    assert part[: part.find("</section>")].count("<img") == 8 + 1  # the tiles and the embedding
    assert read(digits_run, "manifest.json")["timings"]["interpret_s"] > 0


def test_a_features_run_embeds_its_features_and_has_no_grad_cam(digits_run, tmp_path) -> None:
    import cnnlab

    config = tmp_path / "features.yaml"
    raw = yaml.safe_load(read(digits_run, "config.yaml"))
    features = {
        "seed": 0,
        "data": raw["data"],
        "model": {"from_run": str(digits_run)},
        "classifier": {"name": "knn", "k": 3},
    }
    config.write_text(yaml.safe_dump(features), encoding="utf-8")

    folder = cnnlab.run(config, output_dir=tmp_path / "runs", quiet=True).folder

    saved = read(folder, "interpretation.json")
    assert saved["embedding"]["dimension"] == 6 * 6 * 4
    assert len(saved["embedding"]["coordinates"]["t-SNE"]) == len(split_rows(folder))
    assert "trains no network" in saved["cam"]["skipped"]
    html = read(folder, "report.html")
    assert "No Grad-CAM panels: a features run trains no network" in html
    assert "Embedding of the penultimate features" in html


def test_the_page_is_written_again_from_the_folder_and_interpret_false_leaves_it_out(
    digits_run, tmp_path
) -> None:
    copy = shutil.copytree(digits_run, tmp_path / "copy")
    (copy / "report.html").unlink()
    again = rewrite_report(FinishedRun.open(copy)).read_text(encoding="utf-8")
    assert again.count("<br>loss ") == 32 and "Grad-CAM at conv2d" in again
    assert "Embedding of the penultimate features" in again

    config = yaml.safe_load(read(copy, "config.yaml"))
    config["report"] = {"interpret": False}
    (copy / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    plain = rewrite_report(FinishedRun.open(copy)).read_text(encoding="utf-8")

    assert 'id="interpretation"' not in plain and "highest loss" not in plain
    found = GALLERY_COUNT.search(plain)
    assert found and int(found[2]) == off_diagonal(
        read(copy, "metrics.json")["test"]["confusion_matrix"]
    )
    wrong = [row["path"] for row in split_rows(copy) if row["label"] != row["predicted"]]
    assert gallery_paths(plain) == wrong[:32]  # in file order


def test_changing_report_interpret_does_not_stop_a_resume(tmp_path) -> None:
    from cnnlab.config_io import load_experiment
    from cnnlab.runs.folder import resume_differences

    path = tmp_path / "experiment.yaml"
    path.write_text("data: {source: digits}\n", encoding="utf-8")
    saved = load_experiment(path)
    assert resume_differences(saved, load_experiment(path, ["report.interpret=false"])) == []
