"""``dvn inspect``, ``dvn export``, ``dvn eval`` and ``dvn train`` through the ``dvn``
entry point: what a user sees on stdout and stderr, and the exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dvn.cli import main
from model_store.arch import DVNConfig, get_architecture
from model_store.checkpoint import load, save
from model_store.manifest import Accuracy, read_manifest
from model_store.model import DVN
from tests.model_store.conftest import COLOR, GRAY, SCRAMBLED

Run = tuple[int, str, str]


def dvn(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = DVNConfig.create(get_architecture("resnet-tiny"), [GRAY, COLOR], SCRAMBLED, "resnet-tiny")
    accuracy = {
        ("gray", 4): Accuracy(value=0.9125, examples=80, data="hand-made"),
        ("color", 1): Accuracy(value=0.5, examples=80, data="hand-made"),
    }
    out = tmp_path_factory.mktemp("cli") / "ckpt"
    save(DVN(cfg).eval(), out, name="inspect-me", version="0.3.0", accuracy=accuracy)
    return out


def test_inspect_shows_every_level(capsys: pytest.CaptureFixture[str], checkpoint: Path) -> None:
    code, out, err = dvn(capsys, "inspect", str(checkpoint))
    assert (code, err) == (0, "")
    sha = read_manifest(checkpoint).weights_sha256[:12]
    assert out.splitlines() == [
        f"inspect-me 0.3.0  sha256 {sha}  architecture resnet-tiny, 4 units",
        "task         level  units         params      bytes   MFLOPs  accuracy",
        "gray             1  0                436    1.7 KiB     0.02         -",
        "gray             2  0,2            1,454    5.7 KiB     0.07         -",
        "gray             3  0,2,1          3,064   12.0 KiB     0.15         -",
        "gray             4  0,2,1,3        5,266   20.6 KiB     0.27    0.9125",
        "color            1  3                462    1.8 KiB     0.09    0.5000",
        "color            2  3,1            1,508    5.9 KiB     0.32         -",
        "color            3  3,1,0          3,146   12.3 KiB     0.67         -",
        "color            4  3,1,0,2        5,376   21.0 KiB     1.16         -",
    ]


def test_inspect_json_prints_the_manifest(
    capsys: pytest.CaptureFixture[str], checkpoint: Path
) -> None:
    code, out, _ = dvn(capsys, "inspect", str(checkpoint), "--json")
    assert code == 0
    assert json.loads(out) == json.loads((checkpoint / "manifest.json").read_text())


@pytest.mark.parametrize("command", ["inspect", "eval", "export"])
def test_a_missing_checkpoint_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "nope"
    extra = ["--task", "gray", "--level", "1", "--out", str(tmp_path / "x")]
    code, out, err = dvn(capsys, command, str(missing), *(extra if command == "export" else []))
    assert (code, out) == (1, "")
    assert err == (
        f"dvn {command}: error: checkpoint directory {missing} does not exist; pass a "
        "directory holding manifest.json and weights.safetensors (e.g. "
        "model_store/checkpoints/demo)\n"
    )


def test_export_writes_a_loadable_checkpoint(
    capsys: pytest.CaptureFixture[str], checkpoint: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "gray-l2"
    code, out, err = dvn(
        capsys, "export", str(checkpoint), "--task", "gray", "--level", "2", "--out", str(out_dir)
    )
    assert (code, err) == (0, "")
    assert out == f"wrote {out_dir}: task gray level 2 (1,454 params, 5,816 bytes)\n"
    exported = load(out_dir)
    assert exported.manifest.name == "inspect-me-gray-level2"
    assert exported.manifest.exported_from is not None
    assert exported.manifest.exported_from.units == [0, 2]
    source = load(checkpoint)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        diff = (exported.model(x, "gray", 1) - source.model(x, "gray", 2)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize(
    ("task", "level", "message"),
    [
        ("digits", "1", "unknown task 'digits'; this model serves: gray, color"),
        ("gray", "5", "level 5 is outside 1..4"),
        ("gray", "0", "level 0 is outside 1..4"),
    ],
)
def test_export_refusals(
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    tmp_path: Path,
    task: str,
    level: str,
    message: str,
) -> None:
    out_dir = tmp_path / "never"
    argv = ["export", str(checkpoint), "--task", task, "--level", level, "--out", str(out_dir)]
    code, out, err = dvn(capsys, *argv)
    assert (code, out, err) == (1, "", f"dvn export: error: {message}\n")
    assert not out_dir.exists()


def test_eval_json_remeasures_the_stored_accuracy(
    capsys: pytest.CaptureFixture[str], trained_checkpoint: Path
) -> None:
    code, out, err = dvn(capsys, "eval", str(trained_checkpoint), "--json", "--device", "cpu")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    manifest = read_manifest(trained_checkpoint)
    levels = [(t.name, lv) for t in manifest.tasks for lv in t.levels]
    assert [(r["task"], r["level"]) for r in rows] == [(name, lv.level) for name, lv in levels]
    for row, (_, lv) in zip(rows, levels, strict=True):
        assert lv.accuracy is not None
        assert row["stored"] == lv.accuracy.value
        assert abs(row["measured"] - lv.accuracy.value) <= 1e-9
        assert row["data"] == lv.accuracy.data


def test_eval_table(capsys: pytest.CaptureFixture[str], trained_checkpoint: Path) -> None:
    code, out, _ = dvn(capsys, "eval", str(trained_checkpoint), "--device", "cpu")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "task         level   stored  measured  data"
    assert len(lines) == 9
    manifest = read_manifest(trained_checkpoint)
    for line, lv in zip(lines[1:5], manifest.task("digits").levels, strict=True):
        assert lv.accuracy is not None
        value = f"{lv.accuracy.value:.4f}"
        assert line == f"digits{lv.level:>12}{value:>9}{value:>10}  {lv.accuracy.data}"


def test_eval_of_a_checkpoint_without_training_data(
    capsys: pytest.CaptureFixture[str], checkpoint: Path
) -> None:
    code, out, err = dvn(capsys, "eval", str(checkpoint), "--device", "cpu")
    assert (code, out) == (1, "")
    assert err == (
        f"dvn eval: error: {checkpoint}: the manifest records no training data, so there is "
        "nothing to re-measure on; evaluate the checkpoint it was exported from instead\n"
    )


SMALL_TOML = """name = "small"
architecture = "resnet-tiny"
tasks = ["shapes"]
n_train = 40
n_test = 20
epochs = 1
batch_size = 20
"""


def test_train_from_a_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    out_dir = tmp_path / "small"
    code, out, err = dvn(capsys, "train", "--config", str(config), "--out", str(out_dir), "--quiet")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"wrote {out_dir} in ")
    assert lines[1].startswith("small 1.0.0  sha256 ")
    assert [line.split()[:2] for line in lines[3:]] == [["shapes", str(lv)] for lv in (1, 2, 3, 4)]
    manifest = load(out_dir).manifest
    assert manifest.training is not None
    assert manifest.training["epochs"] == 1
    assert all(lv.accuracy is not None for lv in manifest.tasks[0].levels)


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_train_refuses_a_bad_epochs_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, epochs: str
) -> None:
    config = tmp_path / "small.toml"
    config.write_text(SMALL_TOML)
    out_dir = tmp_path / "never"
    argv = ["train", "--config", str(config), "--epochs", epochs, "--out", str(out_dir)]
    code, out, err = dvn(capsys, *argv)
    assert (code, out) == (1, "")
    assert err == (
        "dvn train: error: invalid option: --epochs: Input should be greater than or equal to 1\n"
    )
    assert not out_dir.exists()


def test_train_refuses_a_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text('{"epochs": 0}')
    code, out, err = dvn(capsys, "train", "--config", str(config), "--out", str(tmp_path / "x"))
    assert (code, out) == (1, "")
    assert err == (
        f"dvn train: error: training config {config} is invalid: epochs: Input should be "
        "greater than or equal to 1\n"
    )


def test_train_refuses_an_unknown_preset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = dvn(capsys, "train", "--preset", "huge", "--out", str(tmp_path / "x"))
    assert code == 1
    assert err == (
        "dvn train: error: unknown preset 'huge'; valid presets: cifar-j1, demo, standard, "
        "standard-tiny, tiny\n"
    )
