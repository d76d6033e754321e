"""Every replica's ``dvn_*`` series on one ``/metrics`` page, each with a ``replica`` label.

The ingress asks each replica for its registry's text (``DVNEngine.metrics``, routed to
that replica by name) and merges the pages: one ``# HELP``/``# TYPE`` header per family, then
the samples of every replica, as Prometheus's text format requires.
"""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?(\s.*)$")


def with_replica(line: str, replica: str) -> str:
    """One sample line with ``replica="..."`` first among its labels."""
    match = _SAMPLE.match(line)
    if match is None:
        return line
    name, labels, rest = match.groups()
    label = f'replica="{replica}"'
    inner = label if not labels or labels == "{}" else f"{label},{labels[1:-1]}"
    return f"{name}{{{inner}}}{rest}"


def merge_pages(pages: dict[str, str]) -> str:
    """The Prometheus text pages of the replicas (name -> page), merged and labelled."""
    headers: dict[str, list[str]] = {}  # family -> its HELP and TYPE lines, first seen
    samples: dict[str, list[str]] = {}
    for replica, page in sorted(pages.items()):
        family = ""
        for line in page.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(maxsplit=3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    seen = headers.setdefault(family, [])
                    if len(seen) < 2 and line not in seen:
                        seen.append(line)
                    samples.setdefault(family, [])
                continue
            samples.setdefault(family, []).append(with_replica(line, replica))
    lines: list[str] = []
    for family, rows in samples.items():
        lines += headers.get(family, [])
        lines += rows
    return "\n".join(lines) + "\n"
