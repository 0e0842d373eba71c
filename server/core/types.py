"""Constrained text types shared by request models.

Names and codes are what people and institutions are called; they have no
use for markup, control characters or SQL punctuation, so those are refused
with a clear reason rather than stored. Free clinical text is a plain ``str``
(stored as given through bound parameters, escaped where it is shown).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

_PERSON = re.compile(r"^[^\W\d_]+(?:[ ·'.\-][^\W\d_]+)*\.?$")
_ORG = re.compile(r"^[\w ·()（）\-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _person_name(value: str) -> str:
    if not _PERSON.match(value):
        raise ValueError(
            "a name has letters, with single spaces, '·', '-', ''' or '.' between them"
        )
    return value


def _org_name(value: str) -> str:
    if not _ORG.match(value):
        raise ValueError("letters, digits, spaces, '·', '-' and brackets only")
    return value


def _plain_text(value: str) -> str:
    if _CONTROL.search(value.replace("\n", "").replace("\t", "")):
        raise ValueError("control characters are not allowed")
    return value


PersonName = Annotated[
    str, StringConstraints(min_length=1, max_length=100), AfterValidator(_person_name)
]
OrgName = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_org_name)]
Code = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9_-]{1,31}$")]
Username = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{2,31}$")]
Password = Annotated[str, Field(min_length=8, max_length=128)]
Region = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 -]{5,18}$")]
PlainText = Annotated[str, AfterValidator(_plain_text)]
