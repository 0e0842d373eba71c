"""GB 11643-1999 resident IDs: check character, birth date, region, sex, 15-digit upgrade."""

from __future__ import annotations

from datetime import date

import pytest

from server.core.ids import ResidentIdError, check_character, make_resident_id, parse_resident_id


def test_the_standard_example_is_valid() -> None:
    parsed = parse_resident_id("11010519491231002X")
    assert parsed.region == "110105"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.sex == "female"  # sequence 002 is even
    assert parse_resident_id("11010519491231002x").number == "11010519491231002X"


@pytest.mark.parametrize(
    ("first17", "check"),
    [("11010519491231002", "X"), ("44030419900101001", "1"), ("37020219550312031", "2")],
)
def test_check_character_iso_7064_mod_11_2(first17: str, check: str) -> None:
    assert check_character(first17) == check


def test_fifteen_digit_ids_are_upgraded() -> None:
    parsed = parse_resident_id("110105491231002")
    assert parsed.number == "11010519491231002X"
    assert parsed.sex == "female"


@pytest.mark.parametrize(
    ("number", "check"),
    [
        ("110105194912310021", "check_character"),
        ("11010519491331002X", "birth_date"),  # month 13
        ("11010519490230002X", "birth_date"),  # 30 February
        ("110105" + "20991231" + "001", "birth_date"),  # future, checked before the check char
        ("99010519491231002X", "region"),
        ("11000019491231002X", "region"),
        ("1101051949123100", "format"),
        ("11010519491231002Y", "format"),
        ("", "format"),
    ],
)
def test_invalid_ids_name_the_failed_check(number: str, check: str) -> None:
    if len(number) == 17:
        number += check_character(number)
    with pytest.raises(ResidentIdError) as caught:
        parse_resident_id(number, today=date(2026, 11, 25))
    assert caught.value.check == check


def test_made_ids_round_trip() -> None:
    number = make_resident_id("370202", date(1955, 3, 12), 31)
    parsed = parse_resident_id(number)
    assert (parsed.sex, parsed.birth_date, parsed.region) == ("male", date(1955, 3, 12), "370202")
