"""DVNClient.export: the archive is verified against its sha256 header and unpacked
safely, or refused as a whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import errors
from clients.client import DVNClient
from tests.clients.fakes import (
    CHECKPOINT_FILES,
    URL,
    Recorder,
    error_response,
    make_tar,
    ok,
    tar_response,
)


def client_for(handler: Recorder) -> DVNClient:
    return DVNClient(URL, transport=handler.transport)


def test_export_verifies_and_extracts(tmp_path: Path) -> None:
    fake = Recorder(tar_response(make_tar(CHECKPOINT_FILES)))
    with client_for(fake) as dvn:
        path = dvn.export("digits", level=2, out_dir=tmp_path / "out")
    assert fake.requests[0].url.path == "/v1/models/digits/levels/2/export"
    assert path == tmp_path / "out"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == CHECKPOINT_FILES


def test_export_by_budget_and_folder_in_archive(tmp_path: Path) -> None:
    files = {f"demo-digits-level1/{k}": v for k, v in CHECKPOINT_FILES.items()}
    fake = Recorder(tar_response(make_tar(files)))
    with client_for(fake) as dvn:
        path = dvn.export("digits", budget="200kB", out_dir=tmp_path)
    assert fake.requests[0].url.path == "/v1/models/digits/export"
    assert dict(fake.requests[0].url.params) == {"budget": "200kB"}
    assert path == tmp_path / "demo-digits-level1"


def test_export_needs_exactly_one_of_level_and_budget(tmp_path: Path) -> None:
    with client_for(Recorder(ok())) as dvn:
        with pytest.raises(ValueError, match="exactly one"):
            dvn.export("digits", out_dir=tmp_path)
        with pytest.raises(ValueError, match="exactly one"):
            dvn.export("digits", level=1, budget="1MiB", out_dir=tmp_path)


@pytest.mark.parametrize(
    ("sha", "match"),
    [("0" * 64, "damaged in transit"), (None, "without an X-DVN-Archive-SHA256")],
)
def test_export_with_bad_or_missing_checksum_writes_nothing(
    tmp_path: Path, sha: str | None, match: str
) -> None:
    fake = Recorder(tar_response(make_tar(CHECKPOINT_FILES), sha256=sha))
    with client_for(fake) as dvn, pytest.raises(errors.ArchiveError, match=match):
        dvn.export("digits", level=2, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("files", "links", "match"),
    [
        ({"../evil.txt": b"x", **CHECKPOINT_FILES}, None, "points outside"),
        ({"a/../../evil.txt": b"x"}, None, "points outside"),
        ({"/tmp/evil.txt": b"x"}, None, "absolute path"),
        (CHECKPOINT_FILES, {"link": "../../etc/passwd"}, "link or special file"),
    ],
)
def test_export_refuses_unsafe_archives(
    tmp_path: Path, files: dict[str, bytes], links: dict[str, str] | None, match: str
) -> None:
    fake = Recorder(tar_response(make_tar(files, links=links)))
    out = tmp_path / "deep" / "out"
    with client_for(fake) as dvn, pytest.raises(errors.ArchiveError, match=match):
        dvn.export("digits", level=2, out_dir=out)
    assert not out.exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_export_error_response_is_typed(tmp_path: Path) -> None:
    message = "memory budget 1kB is below the smallest level (46,144 bytes)"
    fake = Recorder(error_response(422, "budget_unsatisfiable", message))
    with client_for(fake) as dvn, pytest.raises(errors.BudgetUnsatisfiableError, match="46,144"):
        dvn.export("digits", budget="1kB", out_dir=tmp_path)
