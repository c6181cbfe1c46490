"""The three Pachyderm pipelines; each folder holds a spec and the code its transform runs."""

from __future__ import annotations

import json
from pathlib import Path

PIPELINES = ("splitter", "renderer", "merger")


def spec_path(name: str) -> Path:
    return Path(__file__).parent / name / "pipeline.json"


def load_spec(name: str) -> dict:
    return json.loads(spec_path(name).read_text(encoding="utf-8"))
