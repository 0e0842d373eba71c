"""Resident identity numbers, GB 11643-1999.

An 18-character number is a 6-digit address code, an 8-digit birth date, a
3-digit sequence (odd for men, even for women) and a check character computed
by ISO 7064 MOD 11-2. Legacy 15-digit numbers (2-digit year, no check
character) are upgraded to 18 by inserting "19" and computing the check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

# HL7 China's OID for the resident ID number, the FHIR identifier system.
RESIDENT_ID_SYSTEM = "urn:oid:2.16.840.1.113883.2.23.1.8.4.1"

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
# Province-level codes (first two digits of the address code), GB/T 2260.
_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
        "83",
    ]
)
_REGION = re.compile(r"^\d{6}$")

Sex = Literal["male", "female"]


class ResidentIdError(ValueError):
    """Says which check a resident ID failed; ``check`` is a stable code."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(message)


@dataclass(frozen=True)
class ResidentId:
    number: str
    region: str
    birth_date: date
    sex: Sex


def check_character(first17: str) -> str:
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def check_region(region: str) -> str:
    if not _REGION.match(region):
        raise ResidentIdError("region", "the region code must be 6 digits")
    if region[:2] not in _PROVINCES:
        raise ResidentIdError("region", f"'{region[:2]}' is not a province-level region code")
    if region[2:] == "0000" and region[:2] not in {"71", "81", "82"}:
        # A whole province is not a place of household registration.
        raise ResidentIdError("region", "the region code names a province, not a county")
    return region


def parse_resident_id(raw: str, *, today: date | None = None) -> ResidentId:
    """Validate a resident ID (15 or 18 characters) and return its parts.

    Raises :class:`ResidentIdError` naming the failed check: ``format``,
    ``region``, ``birth_date`` or ``check_character``.
    """
    number = raw.strip().upper()
    if re.fullmatch(r"\d{15}", number):
        first17 = number[:6] + "19" + number[6:]
        number = first17 + check_character(first17)
    elif not re.fullmatch(r"\d{17}[\dX]", number):
        raise ResidentIdError(
            "format", "a resident ID is 18 characters: 17 digits and a digit or X"
        )
    region = check_region(number[:6])
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise ResidentIdError("birth_date", "the birth date in the ID is not a real date") from None
    if born > (today or date.today()) or born.year < 1880:
        raise ResidentIdError("birth_date", "the birth date in the ID is in the future or too old")
    expected = check_character(number[:17])
    if number[17] != expected:
        raise ResidentIdError(
            "check_character", "the check character does not match (ISO 7064 MOD 11-2)"
        )
    sex: Sex = "male" if int(number[16]) % 2 == 1 else "female"
    return ResidentId(number=number, region=region, birth_date=born, sex=sex)


def make_resident_id(region: str, birth: date, sequence: int) -> str:
    """Build a valid 18-character ID (demo data, tests, imports lacking one)."""
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)
