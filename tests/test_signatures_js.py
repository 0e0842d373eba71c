"""A prescription's and a consult opinion's signatures verify in JavaScript, from the docs alone.

``tests/verify_signature.mjs`` is an outside verifier written from ``docs/signatures.md``:
Node's ``crypto`` (Ed25519) and a ten-line RFC 8785 canonicalizer. It gets the HTTP
answers' bodies as a client receives them — never Python's re-serialisation — so a
number the server spells ``5.0`` must canonicalize to ``5`` for the check to pass.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from tests.consults.conftest import consult_case, scheduled_consult  # noqa: F401 (a fixture)
from tests.consults.test_room import enter
from tests.helpers import Api
from tests.prescriptions.conftest import World, prescription, world  # noqa: F401 (a fixture)

SCRIPT = Path(__file__).with_name("verify_signature.mjs")
NODE = shutil.which("node")


async def node_verify(kind: str, body: str) -> dict[str, bool]:
    assert NODE is not None, "node (Node.js 18 or later) is needed on PATH"
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(SCRIPT),
        kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(body.encode()), timeout=30)
    assert process.returncode == 0, err.decode()
    result: dict[str, bool] = json.loads(out)
    return result


async def raw_get(api: Api, path: str, as_: str) -> str:
    """The answer's body exactly as the server sent it."""
    response = await api.client.get(
        path, headers={"Authorization": f"Bearer {await api.token(as_)}"}
    )
    text = await response.text()
    assert response.status == 200, text
    return text


def tampered(body: str, path: list[Any], value: Any) -> str:
    document = json.loads(body)
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(document, ensure_ascii=False)


async def test_a_prescription_signature_verifies_in_node(
    backend: str,
    api: Api,
    world: World,  # noqa: F811
) -> None:
    status, rx = await api.post("/api/v1/prescriptions", as_="dr_li", json=prescription(world))
    assert status == 201, rx
    for reader in ("dr_li", "patient_qian"):  # the doctor's copy and the patient's
        body = await raw_get(api, f"/api/v1/prescriptions/{rx['id']}", as_=reader)
        assert '"dose":5.0' in body.replace(" ", "")  # Python's float spelling on the wire
        assert await node_verify("prescription", body) == {"key_id_ok": True, "valid": True}
    changed = tampered(body, ["content", "items", 0, "days"], 70)
    assert await node_verify("prescription", changed) == {"key_id_ok": True, "valid": False}


async def test_a_consult_opinion_signature_verifies_in_node(
    backend: str,
    api: Api,
    consult_case: dict[str, Any],  # noqa: F811
) -> None:
    consult = await scheduled_consult(api, consult_case)
    await enter(api, consult)
    opinion = {
        "findings": "心电图示ST段压低 0.5 mV",
        "diagnostic_opinion": "考虑稳定型心绞痛",
        "treatment_advice": '加用阿司匹林 100 mg qd，完善冠脉CTA；"胸痛"加重即急诊\n复查',
        "refer": True,
        "refer_note": "建议转诊心内科门诊",
    }
    cid = consult["id"]
    status, written = await api.post(f"/api/v1/consults/{cid}/opinion", as_="dr_li", json=opinion)
    assert status == 201, written
    body = await raw_get(api, f"/api/v1/consults/{cid}/opinion", as_="gp_zhang")
    assert await node_verify("opinion", body) == {"key_id_ok": True, "valid": True}
    changed = tampered(body, ["opinion", "refer"], False)
    assert await node_verify("opinion", changed) == {"key_id_ok": True, "valid": False}
    # In the patient's record: the attachment is the signed bytes themselves.
    document = await raw_get(
        api, f"/fhir/DocumentReference/{written['document_id']}", as_="gp_zhang"
    )
    assert await node_verify("document-reference", document) == {
        "key_id_ok": True,
        "valid": True,
    }
