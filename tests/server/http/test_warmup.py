"""The front end's warm-up covers every body type it decodes (server/http/warmup.py)."""

from __future__ import annotations

from pathlib import Path

from model_store.checkpoint import load
from server.http.decode import IMAGE_TYPES, JSON_TYPES, NPY_TYPES
from server.http.oip_protocol import FLOAT_DATATYPES, PIXEL_DATATYPE
from server.http.warmup import OIP_BODY, warm_codecs


def test_warm_up_decodes_every_accepted_body_type_of_every_task(tiny_checkpoint: Path) -> None:
    checkpoint = load(tiny_checkpoint)
    specs = {s.name: s for s in checkpoint.model.config.tasks}
    warmed = warm_codecs(checkpoint.manifest, specs)
    v1 = {*JSON_TYPES, *NPY_TYPES, *IMAGE_TYPES}
    oip = {OIP_BODY + datatype for datatype in (*FLOAT_DATATYPES, PIXEL_DATATYPE)}
    assert warmed == v1 | oip
