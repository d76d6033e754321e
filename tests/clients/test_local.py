"""LocalDVN runs an exported (task, level) exactly as the full network computes it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from clients.client import DVNClient
from clients.local import LocalDVN
from model_store import checkpoint, manifest
from model_store.arch import DVNConfig, get_architecture
from model_store.export import export_level
from model_store.model import DVN
from model_store.tasks import Preprocessing, TaskSpec
from tests.clients.fakes import Recorder, tar_response

CLASSES = tuple(str(i) for i in range(10))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[DVN, Path]:
    """A small random DVN (4 levels), saved as a checkpoint."""
    torch.manual_seed(0)
    spec = TaskSpec("digits", CLASSES, (1, 8, 8), Preprocessing("L", (8, 8), (0.5,), (0.5,)))
    model = DVN(DVNConfig.create(get_architecture("resnet-tiny"), [spec])).eval()
    root = tmp_path_factory.mktemp("full")
    checkpoint.save(model, root, name="t")
    return model, root


@pytest.fixture(scope="module")
def exported(full: tuple[DVN, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "digits-l2"
    export_level(checkpoint.load(full[1]), "digits", 2, out)
    return out


def tar_of(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return buf.getvalue()


def expected_probabilities(model: DVN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x), task=0, level=2), dim=-1).numpy()


def test_probabilities_equal_the_full_network_at_that_level(
    full: tuple[DVN, Path], exported: Path
) -> None:
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8), dtype=np.float32)
    local = LocalDVN.load(exported)
    predictions = local.predict(x)
    expected = expected_probabilities(full[0], x)
    assert len(predictions) == 5
    for p, row in zip(predictions, expected, strict=True):
        assert p.probabilities is not None
        np.testing.assert_allclose(p.probabilities, row, atol=1e-5)
        assert p.class_index == int(row.argmax())
        assert p.class_name == CLASSES[p.class_index]
        assert p.probability == pytest.approx(float(row.max()), abs=1e-5)
    assert (local.task, local.level, local.units, local.classes) == ("digits", 2, (0, 1), CLASSES)
    assert local.input_shape == (1, 8, 8)
    assert local.param_bytes == manifest.read_manifest(exported).tasks[0].levels[0].param_bytes


def test_single_example_shapes_and_top_k(full: tuple[DVN, Path], exported: Path) -> None:
    local = LocalDVN.load(exported)
    x = np.random.default_rng(2).standard_normal((1, 8, 8), dtype=np.float32)
    expected = expected_probabilities(full[0], x[None])[0]
    for inputs in (x, x[0], torch.from_numpy(x), x.astype(np.float64)):
        (p,) = local.predict(inputs)
        np.testing.assert_allclose(p.probabilities or [], expected, atol=1e-5)
    (p,) = local.predict(x, top_k=3)
    assert p.probabilities is None and p.top_k is not None
    assert [c.class_index for c in p.top_k] == list(np.argsort(-expected)[:3])
    np.testing.assert_allclose(
        [c.probability for c in p.top_k], np.sort(expected)[::-1][:3], atol=1e-5
    )


def test_bad_inputs_are_refused(exported: Path) -> None:
    local = LocalDVN.load(exported)
    with pytest.raises(ValueError, match=r"shape \(1, 8, 8\)"):
        local.predict(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        local.predict(np.full((1, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="top_k"):
        local.predict(np.zeros((1, 8, 8), np.float32), top_k=11)


def test_loads_the_exported_tar_archive(exported: Path, tmp_path: Path) -> None:
    archive = tmp_path / "digits-l2.tar"
    archive.write_bytes(tar_of(exported))
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8), dtype=np.float32)
    from_tar = LocalDVN.load(archive).predict(x)
    from_dir = LocalDVN.load(exported).predict(x)
    assert from_tar == from_dir


def test_client_export_then_local_run(
    exported: Path, full: tuple[DVN, Path], tmp_path: Path
) -> None:
    fake = Recorder(tar_response(tar_of(exported)))
    with DVNClient("http://dvn.test", transport=httpx.MockTransport(fake)) as dvn:
        path = dvn.export("digits", level=2, out_dir=tmp_path / "dl")
    x = np.random.default_rng(4).standard_normal((1, 1, 8, 8), dtype=np.float32)
    (p,) = LocalDVN.load(path).predict(x)
    np.testing.assert_allclose(
        p.probabilities or [], expected_probabilities(full[0], x)[0], atol=1e-5
    )


def test_full_checkpoint_is_refused_with_advice(full: tuple[DVN, Path]) -> None:
    with pytest.raises(ValueError, match="dvn export"):
        LocalDVN.load(full[1])


def test_tampered_weights_are_refused(exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in exported.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(manifest.CheckpointError, match="sha256"):
        LocalDVN.load(copy)
    with pytest.raises(FileNotFoundError):
        LocalDVN.load(tmp_path / "nowhere")
