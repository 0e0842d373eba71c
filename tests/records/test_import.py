"""``yihao import-fhir``: files and folders of bundles imported as an institution's push."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.cli import main
from server.container import Services
from server.core.ids import RESIDENT_ID_SYSTEM, parse_resident_id
from server.records.importer import bundle_files, ensure_resident_id, import_files
from tests.conftest import SECRET
from tests.records.conftest import load_bundle


def without_resident_id(name: str = "visit") -> dict[str, Any]:
    """An export from a system that knows no resident IDs (like Synthea's)."""
    bundle = load_bundle()
    patient = bundle["entry"][0]["resource"]
    patient["identifier"] = [{"system": "http://hospital.example.org", "value": name}]
    patient["id"] = name
    return bundle


def test_a_missing_resident_id_is_added_deterministically() -> None:
    first, second = without_resident_id(), without_resident_id()
    assert ensure_resident_id(first) == 1 and ensure_resident_id(second) == 1
    ids = [b["entry"][0]["resource"]["identifier"][-1] for b in (first, second)]
    assert ids[0] == ids[1] and ids[0]["system"] == RESIDENT_ID_SYSTEM
    parsed = parse_resident_id(ids[0]["value"])
    assert (parsed.sex, parsed.birth_date.isoformat()) == ("male", "1960-05-01")
    assert ensure_resident_id(first) == 0  # already has one


async def test_import_files_counts_what_it_stored(
    network: Services, tmp_path: Path, seeded: int
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "visit.json").write_text(json.dumps(without_resident_id()))
    (tmp_path / "broken.json").write_text("{")
    files = bundle_files([tmp_path])
    assert [f.name for f in files] == ["visit.json", "broken.json"]  # a/visit.json sorts first
    seen: list[str] = []
    summary = await import_files(
        network,
        files,
        "QDSL",
        lambda done, total, path, note: seen.append(f"{done}/{total} {note}"),
    )
    assert (summary.files, summary.bundles, summary.created, summary.updated) == (2, 1, 12, 0)
    assert summary.types["Observation"] == 3 and summary.ids_added == 1
    assert summary.failed[0][0].endswith("broken.json")
    assert seen == ["1/2 12 entries", "2/2 failed"]
    again = await import_files(network, files[:1], "QDSL")
    assert (again.created, again.updated) == (0, 12)


def test_the_cli_imports_and_summarises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in {
        "YIHAO_DATA_DIR": str(tmp_path), "YIHAO_SECRET_KEY": SECRET,
        "YIHAO_ARGON2_TIME_COST": "1", "YIHAO_ARGON2_MEMORY_KIB": "64", "YIHAO_LOG_FORMAT": "text",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    path = tmp_path / "visit.json"
    path.write_text(json.dumps(without_resident_id()))
    assert main(["institution", "create", "--code", "QDSL", "--name", "青岛市立医院",
                 "--kind", "tertiary"]) == 0  # fmt: skip
    assert main(["import-fhir", str(path), "--institution", "QDSL"]) == 0
    out, err = capsys.readouterr()
    assert "imported 1/1 bundles for QDSL" in out and "12 created" in out
    assert "1/1 visit.json (12 entries)" in err
    assert main(["import-fhir", str(tmp_path / "nope"), "--institution", "QDSL"]) == 2
    assert main(["import-fhir", str(path), "--institution", "NOPE"]) == 1
