"""Training configurations: presets and JSON/TOML config files with their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.presets import PRESETS, TrainConfig, get_preset, load_config


def test_presets() -> None:
    assert sorted(PRESETS) == ["cifar-j1", "demo", "standard", "standard-tiny", "tiny"]
    tiny = get_preset("tiny")
    assert (tiny.architecture, tiny.tasks, tiny.epochs) == ("resnet-tiny", ["digits", "shapes"], 2)
    cifar = get_preset("cifar-j1")
    # The paper's setting: WRN-32-4, batch 128, Nesterov momentum 0.9.
    assert (cifar.architecture, cifar.batch_size, cifar.momentum) == ("wrn-32-4", 128, 0.9)


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        get_preset("huge")
    assert str(info.value) == (
        "unknown preset 'huge'; valid presets: cifar-j1, demo, standard, standard-tiny, tiny"
    )


def test_json_config(tmp_path: Path) -> None:
    file = tmp_path / "mine.json"
    file.write_text(
        '{"name": "mine", "tasks": ["digits"], "epochs": 3, "unit_orders": [[3, 2, 1, 0]]}'
    )
    assert load_config(file) == TrainConfig(
        name="mine", tasks=["digits"], epochs=3, unit_orders=[[3, 2, 1, 0]]
    )


def test_toml_config(tmp_path: Path) -> None:
    file = tmp_path / "mine.toml"
    file.write_text(
        'name = "mine"\narchitecture = "resnet-tiny"\ntasks = ["digits", "textures"]\n'
        'lr = 0.05\naugment = "shift-flip"\n'
    )
    config = load_config(file)
    assert config == TrainConfig(
        name="mine",
        architecture="resnet-tiny",
        tasks=["digits", "textures"],
        lr=0.05,
        augment="shift-flip",
    )
    assert config.epochs == 15  # the default


@pytest.mark.parametrize(
    ("name", "text", "problems"),
    [
        ("a.json", '{"epochs": 0}', "epochs: Input should be greater than or equal to 1"),
        ("a.json", '{"epoch": 3}', "epoch: Extra inputs are not permitted"),
        (
            "a.json",
            "[1, 2]",
            "(root): Input should be a valid dictionary or instance of TrainConfig",
        ),
        (
            "a.toml",
            'augment = "rotate"\ntasks = []\n',
            "tasks: List should have at least 1 item after validation, not 0; augment: Input "
            "should be 'none', 'shift' or 'shift-flip'",
        ),
        (
            "a.toml",
            "lr = -1\nmomentum = 1.0\n",
            "lr: Input should be greater than 0; momentum: Input should be less than 1",
        ),
        (
            "a.toml",
            'unit_orders = [[0, "x"]]\n',
            "unit_orders.0.1: Input should be a valid integer, unable to parse string as an "
            "integer",
        ),
        (
            "a.toml",
            "distill = 1.5\ndistill_temperature = 0\n",
            "distill: Input should be less than or equal to 1; distill_temperature: Input "
            "should be greater than 0",
        ),
        (
            "a.toml",
            "level_weights = [1, -1]\n",
            "level_weights: Value error, level weights must be >= 0 with at least one > 0, "
            "got [1.0, -1.0]",
        ),
        (
            "a.toml",
            'input_size = 2\ncolor_mode = "CMYK"\n',
            "input_size: Input should be greater than or equal to 4; color_mode: Input "
            "should be 'L' or 'RGB'",
        ),
    ],
)
def test_invalid_config_names_the_file_and_each_field(
    tmp_path: Path, name: str, text: str, problems: str
) -> None:
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(ValueError) as info:
        load_config(file)
    assert str(info.value) == f"training config {file} is invalid: {problems}"


@pytest.mark.parametrize(
    ("name", "text", "kind", "detail"),
    [
        ("bad.toml", "epochs = \n", "toml", "Invalid value (at line 1, column 10)"),
        ("bad.json", '{"epochs": }', "json", "Expecting value: line 1 column 12 (char 11)"),
        ("noext", "epochs: 3", "JSON", "Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_unparsable_config(tmp_path: Path, name: str, text: str, kind: str, detail: str) -> None:
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(ValueError) as info:
        load_config(file)
    assert str(info.value) == f"training config {file} is not valid {kind}: {detail}"


def test_missing_config(tmp_path: Path) -> None:
    file = tmp_path / "absent.toml"
    with pytest.raises(ValueError) as info:
        load_config(file)
    assert str(info.value) == f"cannot read training config {file}: No such file or directory"
