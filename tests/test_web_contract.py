"""The web client keeps to its contract with the server.

- ``web/src/api/schema.d.ts`` is what openapi-typescript makes of the server's OpenAPI
  document today: a server change that the client's types do not know about fails here
  (fix: ``cd web && npm run api:types``).
- Every REST call goes through the one API client, the only module naming ``/api/v1``,
  from a feature's ``api.ts``: no view or component calls the client (or ``fetch``) itself.
- Comments say why, never who wrote the code.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import directory_lock

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
SRC = WEB / "src"
SCHEMA = SRC / "api" / "schema.d.ts"
CLIENT = SRC / "api" / "client.ts"
# The generator's options; `npm run api:types` must use the same ones.
GENERATOR_OPTIONS = ("--default-non-nullable", "false")


def openapi_document() -> dict[str, Any]:
    """The document exactly as scripts/openapi_dump.py prints it for `npm run api:types`."""
    spec = importlib.util.spec_from_file_location("openapi_dump", ROOT / "scripts/openapi_dump.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document: dict[str, Any] = module.openapi_document()
    return document


def sources() -> list[Path]:
    """The client's own sources (the generated schema is the server's words, not ours)."""
    return sorted(
        path
        for path in SRC.rglob("*")
        if path.suffix in {".ts", ".vue"} and path != SCHEMA and path.is_file()
    )


def npx() -> str:
    npm = shutil.which("npm")
    found = shutil.which("npx")
    if npm is None or found is None:
        pytest.fail("npm is not installed: the web client's types cannot be checked")
    with directory_lock(WEB):
        if not (WEB / "node_modules").is_dir():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
    return found


def test_generated_api_types_match_the_servers_openapi(tmp_path: Path) -> None:
    script = json.loads((WEB / "package.json").read_text())["scripts"]["api:types"]
    assert " ".join(GENERATOR_OPTIONS) in script, "api:types and this test disagree on options"

    document = tmp_path / "openapi.json"
    text = json.dumps(openapi_document(), ensure_ascii=False, indent=2, sort_keys=True)
    document.write_text(text + "\n", encoding="utf-8")
    generated = tmp_path / "schema.d.ts"
    subprocess.run(
        [
            npx(),
            "--no-install",
            "openapi-typescript",
            str(document),
            *GENERATOR_OPTIONS,
            "-o",
            str(generated),
        ],
        cwd=WEB,
        check=True,
        capture_output=True,
        timeout=180,
    )
    assert generated.read_text(encoding="utf-8") == SCHEMA.read_text(encoding="utf-8"), (
        "web/src/api/schema.d.ts is not what the server's OpenAPI document gives: "
        "run `npm run api:types` in web/"
    )


def test_only_the_api_client_names_the_api_base() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources()
        if path != CLIENT
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "/api/v1" in line
    ]
    assert offenders == [], "call the API through web/src/api/client.ts, with a relative path"
    assert CLIENT.read_text(encoding="utf-8").count('"/api/v1"') == 1


# A call of the client (`api.get(`, `api\n  .post(`) or of fetch, wherever it is written.
HTTP_CALL = re.compile(r"\bapi\s*\.\s*(get|post|put)\s*(<[^>(]*>)?\s*\(|\bfetch\s*\(")
# Modules that call the server: the client, each feature's api.ts, and the shared directory
# of institutions (read once per tab for every feature's names).
CALLERS = {CLIENT, SRC / "ui" / "institutions.ts"}


def test_views_call_their_features_api_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
        for path in sources()
        if path not in CALLERS
        and not (path.name == "api.ts" and path.parent.parent == SRC / "features")
        for text in [path.read_text(encoding="utf-8")]
        for match in HTTP_CALL.finditer(text)
    ]
    assert offenders == [], "move the call into the feature's api.ts (a function named for it)"


COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/|<!--.*?-->", re.S)
AUTHORSHIP = re.compile(r"\b(helpers?|branch(es)?|written by|wrote)\b", re.I)


def test_comments_do_not_say_who_wrote_the_code() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {comment.strip()[:80]}"
        for path in sources()
        for comment in COMMENT.findall(path.read_text(encoding="utf-8"))
        if AUTHORSHIP.search(comment)
    ]
    assert offenders == []
