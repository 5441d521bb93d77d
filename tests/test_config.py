"""The experiment file: typed, frozen, and every mistake named by its dotted key."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from cnnlab.config import AugmentConfig, DataConfig
from cnnlab.config_io import load_experiment, validate
from cnnlab.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problem(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, overrides)
    return str(caught.value)


def test_minimal_file_gets_documented_defaults(tmp_path):
    experiment = load_experiment(write(tmp_path, "data: {source: digits}\n"))
    assert experiment.train.batch_size == 32
    assert experiment.data.color_mode == "rgb"
    assert experiment.data.resize == "stretch"


def test_unknown_key_names_its_path_and_suggests_the_right_one(tmp_path):
    message = problem(write(tmp_path, "data: {source: x}\ntrain: {optimiser: {name: adam}}\n"))
    assert "train.optimiser: unknown key; did you mean 'optimizer'?" in message


def test_unknown_top_level_section_is_refused(tmp_path):
    message = problem(write(tmp_path, "data: {source: x}\naugmentation: {}\n"))
    assert "augmentation: unknown key; did you mean 'augment'?" in message


def test_wrong_value_names_dotted_path_and_what_was_expected(tmp_path):
    message = problem(write(tmp_path, "data: {source: x}\ntrain: {optimizer: {lr: fast}}\n"))
    assert "train.optimizer.lr: expected a number, got 'fast'" in message


def test_misspelt_choice_gets_a_suggestion_and_the_choices(tmp_path):
    message = problem(write(tmp_path, "data: {source: x}\ntrain: {optimizer: {name: adamw2}}\n"))
    assert "train.optimizer.name: 'adamw2' is not allowed; did you mean 'adamw'?" in message
    assert "sgd, rmsprop, adam, adamw" in message


def test_all_errors_are_reported_at_once(tmp_path):
    text = "data: {source: x, color_mode: grey}\ntrain: {epochs: -1, batch_size: abc}\n"
    message = problem(write(tmp_path, text))
    assert "data.color_mode" in message
    assert "train.epochs" in message
    assert "train.batch_size: expected a whole number, got 'abc'" in message


def test_missing_source_says_how_to_add_it(tmp_path):
    message = problem(write(tmp_path, "train: {epochs: 3}\n"))
    assert "data: required" in message


def test_set_overrides_nested_keys_with_yaml_values(tmp_path):
    path = write(tmp_path, "data: {source: x}\n")
    experiment = load_experiment(
        path,
        ["train.optimizer.lr=0.01", "data.target_size=[64, 48]", "augment.horizontal_flip=true"],
    )
    assert experiment.train.optimizer.lr == 0.01
    assert experiment.data.target_size == (64, 48)
    assert experiment.augment.horizontal_flip is True


def test_set_with_a_bad_value_names_the_key(tmp_path):
    message = problem(write(tmp_path, "data: {source: x}\n"), ("train.epochs=many",))
    assert "train.epochs: expected a whole number, got 'many'" in message


def test_set_without_equals_sign_explains_the_syntax(tmp_path):
    message = problem(write(tmp_path, "data: {source: x}\n"), ("train.epochs",))
    assert "expected KEY=VALUE" in message


def test_set_through_a_value_is_refused(tmp_path):
    message = problem(write(tmp_path, "data: {source: x}\n"), ("data.source.name=y",))
    assert "data.source is a value" in message


def test_set_into_an_empty_or_switched_off_section_fills_it(tmp_path):
    path = write(tmp_path, "data: {source: x}\ntrain: {early_stopping: null}\n")
    experiment = load_experiment(path, ["train.early_stopping.patience=3"])
    assert experiment.train.early_stopping is not None
    assert experiment.train.early_stopping.patience == 3


def test_fractions_such_as_one_sixth_are_accepted(tmp_path):
    text = "data: {source: x, validation_split: 1/6, test_split: 1/6}\naugment: {rescale: 1/255}\n"
    experiment = load_experiment(write(tmp_path, text))
    assert experiment.data.validation_split == pytest.approx(1 / 6)
    assert experiment.augment.rescale == pytest.approx(1 / 255)


def test_splits_that_leave_no_training_data_are_refused(tmp_path):
    message = problem(
        write(tmp_path, "data: {source: x, validation_split: 0.5, test_split: 0.5}\n")
    )
    assert "leaves nothing to train on" in message


def test_bad_label_pattern_is_reported_as_a_regex_error(tmp_path):
    message = problem(write(tmp_path, "data: {source: x, label_pattern: '(('}\n"))
    assert "data.label_pattern: not a valid regular expression" in message


def test_config_is_frozen(tmp_path):
    experiment = load_experiment(write(tmp_path, "data: {source: x}\n"))
    with pytest.raises(ValidationError):
        experiment.train.epochs = 3


def test_yaml_python_tags_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f"data: !!python/object/apply:os.system ['touch {marker}']\n"
    message = problem(write(tmp_path, text))
    assert "not valid YAML" in message
    assert not marker.exists()


def test_yaml_syntax_error_points_at_line_and_column(tmp_path):
    message = problem(write(tmp_path, "data:\n  source: [unclosed\n"))
    assert "experiment.yaml:" in message
    assert "not valid YAML" in message


def test_missing_file_is_named(tmp_path):
    message = problem(tmp_path / "nope.yaml")
    assert "nope.yaml: no such experiment file" in message


# --- option checks: the sections check every value once; the runtime dataclasses
# (ModernParams, KerasParams, DecodeOptions) built from them are plain data --------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"randaugment": (2, 31)},
        {"randaugment": (2, 9), "trivialaugment": True},
        {"random_resized_crop": (0.0, 1.0)},
        {"random_resized_crop": (0.9, 0.1)},
        {"random_resized_crop": (0.5, 1.5)},
        {"random_erasing": 1.5},
        {"mixup_alpha": -1.0},
        {"color_jitter": (0.4, 0.4, 0.4, 0.6)},
    ],
)
def test_invalid_modern_augmentations_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_unknown_fill_mode_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="constant, nearest, reflect, wrap"):
        validate({"fill_mode": "mirror"}, AugmentConfig, source="augment")


def test_bad_decode_options_are_refused_by_the_data_section():
    with pytest.raises(ConfigError, match="target_size"):
        validate({"source": "x", "target_size": [0, 4]}, DataConfig, source="data")
    with pytest.raises(ConfigError, match="resize"):
        validate({"source": "x", "resize": "squash"}, DataConfig, source="data")


@pytest.mark.parametrize(
    ("augment", "expected"),
    [
        (
            "{random_resized_crop: [0.9, 0.1]}",
            "augment.random_resized_crop: [0.9, 0.1]: low must not exceed high, e.g. [0.08, 1.0]",
        ),
        (
            "{random_resized_crop: [0.5, 1.5]}",
            "augment.random_resized_crop: [0.5, 1.5]: high must be at most 1",
        ),
        (
            "{randaugment: [2, 31]}",
            "augment.randaugment: [2, 31]: the magnitude (second value) runs from 0 to 30",
        ),
        (
            "{randaugment: [2, 9], trivialaugment: true}",
            "augment.trivialaugment: randaugment is set too; they are alternatives",
        ),
        (
            "{color_jitter: [0.4, 0.4, 0.4, 0.6]}",
            "augment.color_jitter: [0.4, 0.4, 0.4, 0.6]: hue (the fourth value) must be at most",
        ),
    ],
)
def test_augment_checks_name_the_key_the_value_and_a_fix(tmp_path, augment, expected):
    message = problem(write(tmp_path, f"data: {{source: x}}\naugment: {augment}\n"))
    assert expected in message
    assert ", got" not in message  # the value is shown once, before the problem


def test_modern_augmentations_within_range_are_accepted(tmp_path):
    text = (
        "data: {source: x}\naugment: {random_resized_crop: [0.08, 1.0], randaugment: [2, 30],"
        " color_jitter: [0.4, 0.4, 0.4, 0.5]}\n"
    )
    augment = load_experiment(write(tmp_path, text)).augment
    assert augment.random_resized_crop == (0.08, 1.0) and augment.randaugment == (2, 30)


@pytest.mark.parametrize(
    ("augment", "expected"),
    [
        ("{rescale: 0.5}", "augment.rescale: 0.5, but a backbone takes images scaled to 0..1"),
        ("{featurewise_center: true}", "augment.featurewise_center: a backbone normalises by"),
        (
            "{samplewise_std_normalization: true}",
            "augment.samplewise_std_normalization: a backbone",
        ),
    ],
)
def test_a_backbone_refuses_its_own_scaling_when_the_file_is_read(tmp_path, augment, expected):
    text = f"data: {{source: x}}\nmodel: {{backbone: vgg16}}\naugment: {augment}\n"
    assert expected in problem(write(tmp_path, text))


def test_a_backbone_accepts_keras_rescale(tmp_path):
    text = "data: {source: x}\nmodel: {backbone: vgg16}\naugment: {rescale: 1/255}\n"
    assert load_experiment(write(tmp_path, text)).augment.rescale == pytest.approx(1 / 255)


def test_report_interpret_is_on_by_default_and_off_by_one_key(tmp_path):
    path = write(tmp_path, "data: {source: x}\n")
    assert load_experiment(path).report.interpret is True
    assert load_experiment(path, ["report.interpret=false"]).report.interpret is False
    off = write(tmp_path, "data: {source: x}\nreport: {interpret: false}\n")
    assert load_experiment(off).report.interpret is False
    message = problem(write(tmp_path, "data: {source: x}\nreport: {interpet: false}\n"))
    assert "report.interpet: unknown key; did you mean 'interpret'?" in message
    message = problem(write(tmp_path, "data: {source: x}\nreport: {interpret: often}\n"))
    assert "report.interpret" in message


# --- task: reconstruction ------------------------------------------------------------------------


def reconstruction_raw(**sections: object) -> dict:
    return {
        "task": "reconstruction",
        "data": {"source": "x"},
        "model": {"name": "s4_upsample_1"},
        **sections,
    }


def test_reconstruction_fills_in_its_section_and_spells_the_steps():
    from cnnlab.config import Experiment

    plain = validate(reconstruction_raw(), Experiment, source="e.yaml")
    assert plain.reconstruction.loss == "binary_crossentropy" and plain.reconstruction.degrade == []
    steps = [{"resize": {"size": [7, 7]}}, {"invert": {"p": 0.1}}, {"mask": {"size": 4}}]
    chosen = validate(reconstruction_raw(reconstruction={"degrade": steps}), Experiment, "e.yaml")
    names = [step.operation[0] for step in chosen.reconstruction.degrade]
    assert names == ["resize", "invert", "mask"]
    assert chosen.reconstruction.degrade[0].resize.interpolation == "skimage"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            {"reconstruction": {"degrade": [{"invert": {"p": 1.5}}]}},
            "reconstruction.degrade.0.invert.p",
        ),
        ({"reconstruction": {"degrade": [{"sharpen": {}}]}}, "reconstruction.degrade.0"),
        ({"reconstruction": {"loss": "ssim"}}, "reconstruction.loss"),
        ({"evaluate": {"tta": True}}, "evaluate.tta: not for task: reconstruction"),
        ({"train": {"class_weight": "balanced"}}, "train.class_weight: not for task"),
        ({"task": "classification", "reconstruction": {}}, "reconstruction: only for task"),
        (
            {"task": "classification", "data": {"source": "x", "targets": "y"}},
            "data.targets: only for task",
        ),
        ({"task": "segmentation"}, "task"),
    ],
)
def test_reconstruction_mistakes_name_the_key(raw, needle):
    from cnnlab.config import Experiment

    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate(reconstruction_raw(**raw), Experiment, source="e.yaml")
