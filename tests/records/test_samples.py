"""The Synthea bundles of the shared samples folder import cleanly (run where the folder exists)."""

from __future__ import annotations

import json

import pytest

from server.config import Settings
from server.container import Services
from server.core import jsonlimits
from server.records.importer import bundle_files, import_files
from tests.helpers import Api
from tests.records.conftest import SAMPLES, assert_valid_fhir

pytestmark = pytest.mark.samples


async def test_the_synthea_samples_import_cleanly(api: Api, network: Services) -> None:
    files = bundle_files([SAMPLES])
    sent = [json.loads(f.read_text()) for f in files]
    total = sum(len(b["entry"]) for b in sent)
    summary = await import_files(network, files, "QDSL")
    async with network.db.read() as session:
        qdsl = (await network.identity.institution_by_code(session, "QDSL")).id
    assert summary.failed == []
    assert summary.bundles == len(files) == 11
    assert summary.created + summary.updated == total
    assert summary.ids_added == len(files)
    # Each file's patient is now searchable; $everything pages through their whole record.
    patient = next(
        e["resource"] for e in sent[0]["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    everything: list[str] = []
    query = {"identifier": f"urn:yihao:institution:QDSL:mrn|{patient['id']}"}
    # Imported is not seen: the hospital's search finds nobody until the patient was there.
    status, body = await api.get("/fhir/Patient", as_="dr_li", params=query)
    assert status == 200 and body["total"] == 0, body
    async with network.db.read() as session:
        pid = await network.patients.find_by_local_number(session, qdsl, patient["id"], "mrn")
    assert pid is not None
    async with network.db.transaction() as tx:  # the desk read the patient's presence code
        await network.access.record_encounter(
            tx, patient_id=pid, institution_id=qdsl, reason="presence"
        )
    status, body = await api.get("/fhir/Patient", as_="dr_li", params=query)
    assert status == 200 and body["total"] == 1, body
    assert body["entry"][0]["resource"]["id"] == str(pid)
    url, params = f"/fhir/Patient/{pid}/$everything", {"_count": "200"}
    while True:
        status, page = await api.get(url, as_="dr_li", params=params)
        assert status == 200, page
        assert_valid_fhir(page)
        everything += [e["resource"]["resourceType"] for e in page["entry"]]
        nexts = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nexts:
            break
        url, _, query = nexts[0].partition("?")
        url = url[url.index("/fhir") :]
        params = dict(p.split("=", 1) for p in query.split("&"))
    about_patient = [
        e for e in sent[0]["entry"]
        if e["resource"]["resourceType"] not in ("Patient", "Organization", "Practitioner")
    ]  # fmt: skip
    assert len(everything) == len(about_patient) + 1
    status, summary_view = await api.get(f"/api/v1/patients/{pid}/summary", as_="dr_li")
    assert status == 200 and summary_view["recent_labs"], summary_view


def test_the_synthea_samples_are_well_within_the_fhir_nesting_limit() -> None:
    # What POST /fhir checks before decoding; real bundles must never come near the limit.
    limit = Settings.model_fields["fhir_json_max_depth"].default
    files = bundle_files([SAMPLES])
    assert len(files) == 11
    for path in files:
        raw = path.read_bytes()
        jsonlimits.check(raw, max_bytes=32 * 1024 * 1024, max_depth=limit)
        assert jsonlimits.nesting_depth(raw) <= limit // 4, path.name
