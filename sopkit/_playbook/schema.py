"""The playbook JSON Schema, for editors (taplo / Even Better TOML read `#:schema`)."""

from __future__ import annotations

from typing import Any

from sopkit._playbook.models import Playbook


def playbook_schema(fragment: bool = False) -> dict[str, Any]:
    """The schema of a playbook, or of a fragment (`rules/*.toml`: no [playbook] needed)."""
    schema = Playbook.model_json_schema()
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    name = "fragment" if fragment else "playbook"
    schema["$id"] = f"https://sopkit.dev/schema/{name}.schema.json"
    schema["title"] = f"sopkit {name}"
    if fragment:
        schema["required"] = [key for key in schema.get("required", []) if key != "playbook"]
        schema["description"] = "A fragment of a sopkit playbook, merged by `include`."
    return schema
