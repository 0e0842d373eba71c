"""Shapes of the triage API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from server.core.api import Strict

MAX_TEXT = 500


class TriageRequest(Strict):
    # What the patient feels, in their own words (Chinese).
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    age: int | None = Field(default=None, ge=0, le=130)
    sex: Literal["male", "female"] | None = None
    pregnant: bool | None = None


class TriageWords(BaseModel):
    zh: str
    en: str


class TriageDepartment(BaseModel):
    code: str
    zh: str
    en: str


class TriageSymptom(BaseModel):
    code: str
    zh: str
    en: str
    # The words of the text that matched, as normalised.
    said: str


class TriageRedFlag(BaseModel):
    code: str
    zh: str
    en: str


class TriageAnswer(BaseModel):
    """What to do, most important first: with a red flag, ``advice[0]`` is 请立即前往急诊或拨打120."""

    id: int
    advice: list[TriageWords]
    emergency: bool
    red_flags: list[TriageRedFlag]
    urgency: Literal["emergency", "urgent", "soon", "routine"]
    urgency_text: TriageWords
    departments: list[TriageDepartment]
    matched: list[TriageSymptom]
    # Symptoms the text named only to deny them (不发烧, 没有胸痛).
    negated: list[TriageSymptom]
    child: bool
    pregnant: bool
    # Nothing was recognised: the answer asks to describe more.
    describe_more: bool
    disclaimer: TriageWords
    knowledge_version: str
    created_at: datetime


class TriageHistoryQuery(Strict):
    limit: int = Field(default=20, ge=1, le=100)
    before: int | None = Field(default=None, ge=1, le=2**31 - 1)


class TriageHistoryItem(BaseModel):
    text: str
    answer: TriageAnswer


class TriageHistory(BaseModel):
    items: list[TriageHistoryItem]
    # Pass as ``before`` for the next (older) page; None when this was the last.
    next_before: int | None
