"""Logging: one line per request on ``dvn.access``, lifecycle on ``dvn.server``; plain
text by default, one JSON object per line with ``log_json``."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

ACCESS = logging.getLogger("dvn.access")
SERVER = logging.getLogger("dvn.server")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            # Not "level": access lines carry the DVN level under that name.
            "severity": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update({k: v for k, v in fields.items() if k not in doc})  # never the base keys
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return line


def configure_logging(level: str = "info", as_json: bool = False) -> None:
    """Route dvn.* logs to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if as_json
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger("dvn")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def access(fields: dict[str, Any]) -> None:
    ACCESS.info("request", extra={"fields": fields})
