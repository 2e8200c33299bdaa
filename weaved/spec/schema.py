"""JSON Schema of the spec, generated from the models (schemas/weave.schema.json)."""

from __future__ import annotations

import json
from typing import Any

from weaved.spec.models import Spec

SCHEMA_ID = "https://weaved.invalid/schemas/weave.schema.json"


def spec_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def render_schema() -> str:
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"
