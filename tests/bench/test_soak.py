"""``dvn bench soak`` at a tiny size: the report's files and numbers, and the progress line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dvn.cli import main

REQUESTS = 600


def test_bench_soak_writes_its_report(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DVN_TORCH_THREADS", "1")
    stderr = io.StringIO()
    stderr.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", stderr)
    out = tmp_path / "results"
    argv = ["bench", "soak", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    argv += ["--requests", str(REQUESTS), "--concurrency", "4", "--budget-mix", "none:1,2s:1"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["soak.json", "soak.md"]
    data = json.loads((out / "soak.json").read_text())
    assert data["checkpoint"] == str(tiny_checkpoint)
    assert data["sent"] == data["requests"] == data["counted"] == REQUESTS
    assert data["ok"] == REQUESTS and data["lost"] == data["timeouts"] == data["errors"] == 0
    assert data["statuses"] == {"200": REQUESTS} and data["server_errors"] == 0
    assert set(data["levels"]) == {"digits", "shapes"}
    assert data["concurrency"] == 4 and data["budget_mix"] == "none:1,2s:1"
    assert 0 < data["rss_start_mib"] <= data["rss_max_mib"]
    assert data["rss_end_mib"] <= data["rss_max_mib"]
    growth = data["rss_end_mib"] - data["rss_start_mib"]  # of values rounded to 0.1 MiB
    assert data["rss_growth_mib"] == pytest.approx(growth, abs=0.11)
    rss = [r for _, r in data["rss_timeline"]]
    late = rss[-1] - rss[len(rss) // 10]
    assert data["rss_growth_last_90pct_mib"] == pytest.approx(late, abs=0.11)
    assert len(data["rss_timeline"]) >= 2  # start and end, and one a second between
    assert data["machine"]["cores"] >= 1
    md = (out / "soak.md").read_text()
    assert md == capsys.readouterr().out.removesuffix("\n")
    assert "Verdict: nothing lost, no 5xx, every request counted by the server." in md
    assert f"| requests sent | {REQUESTS:,} of {REQUESTS:,} |" in md
    assert "| statuses | 200: 600 |" in md
    # The progress line: answered so far and the server's memory, rewritten in place.
    assert "\r\x1b[2K[soak " in stderr.getvalue()
    assert f"/{REQUESTS} (" in stderr.getvalue() and "server RSS" in stderr.getvalue()


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "soak", "--help"])
    help_text = capsys.readouterr().out
    assert "--requests" in help_text and "100000" in help_text


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "soak", "--requests", "0"]) == 1
    assert capsys.readouterr().err == (
        "dvn bench: error: --requests and --concurrency must be >= 1, --max-duration > 0\n"
    )
