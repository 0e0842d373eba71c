"""Print the server's OpenAPI document (what ``GET /api/openapi.json`` answers) as JSON.

The document is built in-process by ``create_app``; nothing is started and no database is
touched, so the web client's types can be generated without a running server.
Usage: ``python3 scripts/openapi_dump.py > openapi.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server.app import OPENAPI, create_app  # noqa: E402
from server.config import load_settings  # noqa: E402


def openapi_document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="yihao-openapi-") as data_dir:
        # The environment is left out: the document must not depend on who generates it.
        app = create_app(load_settings(environ={}, data_dir=Path(data_dir)))
        return app[OPENAPI]


def main() -> None:
    json.dump(openapi_document(), sys.stdout, ensure_ascii=False, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
