"""The drug catalogue: loaded from a file (the demo one ships with the seed), refused when
malformed, replaced as a whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server.cli import main
from server.config import Settings
from server.container import Services
from server.prescriptions.catalogue import DEMO_CATALOGUE, CatalogueError


async def test_the_demo_catalogue_is_realistic(network: Services) -> None:
    catalogue = network.prescriptions.catalogue
    drugs = await catalogue.drugs({"C08CA01", "N05BA01", "B01AA03", "M01AE01"})
    assert drugs["C08CA01"].name == "苯磺酸氨氯地平片"
    assert drugs["C08CA01"].max_daily_dose == 10
    assert drugs["N05BA01"].restricted == "psychotropic"
    pairs = await catalogue.interactions({"B01AA03", "M01AE01"})
    assert [(p.a, p.b, p.severity) for p in pairs] == [("B01AA03", "M01AE01", "severe")]
    assert await catalogue.is_chronic("E11.9") and not await catalogue.is_chronic("J06")


async def test_a_catalogue_file_replaces_the_catalogue(network: Services, tmp_path: Path) -> None:
    raw = json.loads(DEMO_CATALOGUE.read_text(encoding="utf-8"))
    raw["drugs"] = [d for d in raw["drugs"] if d["code"] != "M01AE01"]
    raw["interactions"] = [i for i in raw["interactions"] if "M01AE01" not in (i["a"], i["b"])]
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    counts = await network.prescriptions.catalogue.load_file(path)
    assert counts["drugs"] == len(raw["drugs"])
    assert await network.prescriptions.catalogue.drugs({"M01AE01"}) == {}

    raw["interactions"].append({"a": "C08CA01", "b": "NOPE", "severity": "severe",
                                "description": "x"})  # fmt: skip
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CatalogueError, match="unknown drugs"):
        await network.prescriptions.catalogue.load_file(path)
    assert len(await network.prescriptions.catalogue.drugs({"C08CA01"})) == 1  # unchanged


def test_cli_loads_the_demo_catalogue(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    if settings.is_sqlite:
        environ = {"YIHAO_DATA_DIR": str(settings.data_dir)}
    else:
        environ = {
            "YIHAO_DATABASE_URL": settings.database_url,
            "YIHAO_CHECKPOINT_KEY_FILE": str(settings.checkpoint_key_file),
        }
    environ |= {"YIHAO_SECRET_KEY": settings.secret_key, "YIHAO_LOG_FORMAT": "text"}
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("YIHAO_")]:
            patch.delenv(key)  # the test tier's own variables are not settings
        for key, value in environ.items():
            patch.setenv(key, value)
        assert main(["drugs", "load"]) == 0
    assert "38 drugs, 15 interaction pairs" in capsys.readouterr().out
