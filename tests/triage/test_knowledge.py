"""TRIAGE_KNOWLEDGE_PATH: a deployment's own table is used; a wrong one stops the start.

A wrong table is refused when the app is built, before it serves, with a message that
names the setting and where the mistake is; ``yihao serve`` says so and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from server.app import create_app
from server.cli import main
from server.config import Settings, SettingsError, load_settings
from server.container import Services
from server.triage.knowledge import SHIPPED
from tests.conftest import TEST_SETTINGS
from tests.helpers import Api


def shipped() -> dict[str, Any]:
    table = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(table, dict)
    return table


def write(path: Path, table: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(table, allow_unicode=True), encoding="utf-8")
    return path


async def test_a_valid_override_is_what_the_triage_answers_with(
    api: Api, network: Services, settings: Settings, tmp_path: Path, aiohttp_client: Any
) -> None:
    table = shipped()
    table["version"] = "青岛-2027.01"
    cough = next(s for s in table["symptoms"] if s["id"] == "cough")
    cough["synonyms"].append("老是清嗓子")
    cough["departments"] = ["ent", "respiratory"]
    path = write(tmp_path / "ours.yaml", table)
    ours = Api(
        await aiohttp_client(create_app(settings.with_overrides(triage_knowledge_path=path)))
    )
    try:
        status, answer = await ours.post(
            "/api/v1/triage", as_="patient_sun", json={"text": "最近老是清嗓子"}
        )
    finally:
        await ours.close()
    assert status == 200, answer
    assert answer["knowledge_version"] == "青岛-2027.01"
    assert [d["code"] for d in answer["departments"]] == ["ent", "respiratory"]
    # The shipped table still answers on the app without the override.
    status, answer = await api.post(
        "/api/v1/triage", as_="patient_sun", json={"text": "最近老是清嗓子"}
    )
    assert answer["describe_more"] is True
    assert answer["knowledge_version"] == shipped()["version"]


def _broken(change: str) -> dict[str, Any]:
    table = shipped()
    cough = next(s for s in table["symptoms"] if s["id"] == "cough")
    if change == "department":
        cough["departments"] = ["urology"]
    elif change == "specialty":
        table["departments"]["urology"] = {"zh": "泌尿外科", "en": "Urology"}
    elif change == "urgency":
        cough["urgency"] = "whenever"
    elif change == "red_flag":
        table["red_flags"][0]["any_of"].append(["chest_pain", "sweaty"])
    elif change == "synonym":
        cough["synonyms"].append("胸痛")
    elif change == "repeated":
        table["symptoms"].append(dict(cough))
    elif change == "unknown_key":
        cough["severity"] = 3
    elif change == "no_symptoms":
        table["symptoms"] = []
    return table


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("department", "department 'urology' is not in departments"),
        ("specialty", "departments.urology: unknown specialty code"),
        (
            "urgency",
            "symptoms[7].urgency: Input should be 'emergency', 'urgent', 'soon' or 'routine'",
        ),
        ("red_flag", "unknown symptom 'sweaty'"),
        ("synonym", "synonym '胸痛' is also a synonym of chest_pain"),
        ("repeated", "'cough' repeats"),
        ("unknown_key", "symptoms[7].severity: unknown key"),
        ("no_symptoms", "symptoms: Tuple should have at least 1 item"),
    ],
)
def test_a_wrong_override_stops_the_start_naming_the_mistake(
    tmp_path: Path, change: str, says: str
) -> None:
    path = write(tmp_path / "wrong.yaml", _broken(change))
    settings = load_settings(
        environ={}, data_dir=tmp_path, triage_knowledge_path=path, **TEST_SETTINGS
    )
    with pytest.raises(SettingsError) as refused:
        create_app(settings)
    message = str(refused.value)
    assert message.startswith(f"YIHAO_TRIAGE_KNOWLEDGE_PATH: {path}: "), message
    assert says in message, message


def test_an_unreadable_or_malformed_file_is_refused(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("version: '1'\nsymptoms: [\n", encoding="utf-8")
    for path, says in (
        (tmp_path / "missing.yaml", "cannot read"),
        (bad_yaml, "not valid YAML (line 3)"),
        (write(tmp_path / "list.yaml", [1, 2]), "expected a mapping"),  # type: ignore[arg-type]
    ):
        settings = load_settings(
            environ={}, data_dir=tmp_path, triage_knowledge_path=path, **TEST_SETTINGS
        )
        with pytest.raises(SettingsError, match="YIHAO_TRIAGE_KNOWLEDGE_PATH") as refused:
            create_app(settings)
        assert says in str(refused.value), refused.value


def test_yihao_serve_refuses_a_wrong_table_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "wrong.yaml", _broken("red_flag"))
    monkeypatch.setenv("YIHAO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("YIHAO_TRIAGE_KNOWLEDGE_PATH", str(path))
    monkeypatch.setenv("YIHAO_PORT", "1")  # never reached: the start stops before listening
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "yihao: settings: YIHAO_TRIAGE_KNOWLEDGE_PATH:" in err
    assert "unknown symptom 'sweaty'" in err
