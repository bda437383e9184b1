"""`python -m sopkit._serve.openapi_doc [FILE]`: write the OpenAPI document of `sopkit serve`.

`make openapi` runs it to regenerate docs/openapi.json. The document depends on the routes
only, so the app is built over placeholders that no request ever reaches, and an empty
playbook (the routes read its name and timezone while they are built).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from sopkit._live.inbox import Inbox
from sopkit._playbook.load import LoadedPlaybook, load
from sopkit._serve.app import build_app
from sopkit._serve.auth import Keys
from sopkit._serve.ingest import Mapper
from sopkit._serve.reads import Reads
from sopkit._serve.service import Counters, ServedLoop


class _Unserved:
    """What build_app reads of the loop while it builds the routes: the counters."""

    counters = Counters()


class _Unread:
    """What build_app reads of the store's reads while it builds the routes: the playbook."""

    def __init__(self, loaded: LoadedPlaybook) -> None:
        self.loaded = loaded


_EMPTY = '[playbook]\nname = "openapi"\nversion = "1"\ntimezone = "UTC"\n'


def document() -> dict[str, Any]:
    """The app's OpenAPI document (every route, the read ones included)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "openapi.toml"
        path.write_text(_EMPTY, encoding="utf-8")
        loaded = load(path)
    app = build_app(cast(ServedLoop, _Unserved()), cast(Inbox, None), cast(Mapper, None),
                    Keys(), reads=cast(Reads, _Unread(loaded)))
    return app.openapi()


def text() -> str:
    """The document as committed: sorted keys, indent 2, a trailing newline."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("docs/openapi.json")
    out.write_text(text(), encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
