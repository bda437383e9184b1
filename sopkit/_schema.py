"""The playbook JSON Schema, for editors (taplo / Even Better TOML read `#:schema`)."""

from __future__ import annotations

from typing import Any

from ._models import Playbook


def playbook_schema() -> dict[str, Any]:
    schema = Playbook.model_json_schema()
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["$id"] = "https://sopkit.dev/schema/playbook.schema.json"
    schema["title"] = "sopkit playbook"
    return schema
