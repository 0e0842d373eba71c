"""Dosing in plain words: what a prescription item's codes mean to the patient.

:func:`dosing_text` renders an item's structured dose, frequency, route and duration
(the codes of :class:`server.prescriptions.schemas.Item`) as one sentence, in Chinese
and in English::

    {"dose": 5, "dose_unit": "mg", "strength": "5mg", "drug_name": "苯磺酸氨氯地平片",
     "route": "口服", "frequency": "tid", "days": 7}
    → 每日3次，每次1片（5mg），口服，共7天
    → 3 times a day, 1 tablet (5 mg) each time, by mouth, for 7 days

The number of tablets (capsules, patches, puffs) is the dose over the strength when both
are in the same unit and the quotient is a whole number or a half; otherwise the dose is
said in its unit. Nothing is added that the prescription does not say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# frequency code -> (zh, en)
FREQUENCY: dict[str, tuple[str, str]] = {
    "qd": ("每日1次", "once a day"),
    "bid": ("每日2次", "twice a day"),
    "tid": ("每日3次", "3 times a day"),
    "qid": ("每日4次", "4 times a day"),
    "q8h": ("每8小时1次", "every 8 hours"),
    "q12h": ("每12小时1次", "every 12 hours"),
    "qn": ("每晚睡前1次", "once a night, at bedtime"),
    "qw": ("每周1次", "once a week"),
    "prn": ("需要时用", "when needed"),
}

ROUTE: dict[str, tuple[str, str]] = {
    "口服": ("口服", "by mouth"),
    "舌下": ("舌下含服", "under the tongue"),
    "吸入": ("吸入", "inhaled"),
    "外用": ("外用", "on the skin"),
    "皮下注射": ("皮下注射", "by injection under the skin"),
    "肌内注射": ("肌内注射", "by injection into a muscle"),
    "静脉注射": ("静脉注射", "by injection into a vein"),
    "经皮": ("贴于皮肤", "as a patch on the skin"),
    "滴眼": ("滴眼", "as eye drops"),
}

# The form a drug's name ends with -> (zh counting word, en singular, en plural).
FORMS: tuple[tuple[str, tuple[str, str, str]], ...] = (
    ("胶囊", ("粒", "capsule", "capsules")),
    ("片", ("片", "tablet", "tablets")),
    ("贴", ("贴", "patch", "patches")),
    ("贴剂", ("贴", "patch", "patches")),
    ("气雾剂", ("揿", "puff", "puffs")),
    ("粉雾剂", ("吸", "inhalation", "inhalations")),
)

_STRENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([^\d\s/]+)\s*$")


def _number(value: float) -> str:
    return f"{value:g}"


def _form(drug_name: str) -> tuple[str, str, str] | None:
    for suffix, form in FORMS:
        if drug_name.endswith(suffix):
            return form
    return None


def _units(item: Mapping[str, Any]) -> float | None:
    """How many tablets (capsules…) one dose is, when that is a plain number."""
    match = _STRENGTH.match(str(item.get("strength", "")))
    if match is None or match.group(2) != item.get("dose_unit"):
        return None
    per_unit = float(match.group(1))
    if per_unit <= 0:
        return None
    count = float(item["dose"]) / per_unit
    if count <= 0 or count > 20 or (count * 2) != int(count * 2):
        return None
    return count


def _amount(item: Mapping[str, Any]) -> tuple[str, str]:
    dose = f"{_number(float(item['dose']))}{item['dose_unit']}"
    dose_en = f"{_number(float(item['dose']))} {item['dose_unit']}"
    form = _form(str(item.get("drug_name", "")))
    count = _units(item)
    if form is None or count is None:
        return dose, dose_en
    word, one, many = form
    if count == 0.5:
        return f"半{word}（{dose}）", f"half a {one} ({dose_en})"
    return (
        f"{_number(count)}{word}（{dose}）",
        f"{_number(count)} {one if count == 1 else many} ({dose_en})",
    )


def dosing_text(item: Mapping[str, Any]) -> dict[str, str]:
    """``{"drug_code", "zh", "en"}`` for one prescription item (a dict as signed)."""
    frequency = str(item.get("frequency", ""))
    zh_often, en_often = FREQUENCY.get(frequency, (frequency, frequency))
    route = str(item.get("route", ""))
    zh_route, en_route = ROUTE.get(route, (route, route))
    zh_amount, en_amount = _amount(item)
    days = int(item.get("days", 0))
    zh = f"{zh_often}，每次{zh_amount}，{zh_route}，共{days}天"
    en = f"{en_often}, {en_amount} each time, {en_route}, for {days} day{'s' if days != 1 else ''}"
    return {"drug_code": str(item.get("drug_code", "")), "zh": zh, "en": en}


def dosing_of(content: Mapping[str, Any]) -> list[dict[str, str]]:
    """The dosing of every item of a prescription's signed content."""
    return [dosing_text(item) for item in content.get("items", [])]
