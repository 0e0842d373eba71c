"""The shipped knowledge table, matched: red flags, negation, departments, children, pregnancy.

Each red flag has a case that raises it and a negated (or otherwise not qualifying) case
that does not; common complaints map to the department a patient should book.
"""

from __future__ import annotations

from typing import Any

import pytest

from server.triage.knowledge import SPECIALTIES, load_knowledge
from server.triage.matching import Matcher, Suggestion

KNOWLEDGE = load_knowledge()
MATCHER = Matcher(KNOWLEDGE)


def suggest(text: str, **form: Any) -> Suggestion:
    return MATCHER.suggest(text, **form)


def flags(s: Suggestion) -> list[str]:
    return [flag.id for flag in s.red_flags]


# (red flag, text that raises it, form, text that must not)
RED_FLAGS = [
    ("chest_pain_sweating", "胸口疼，出了一身冷汗", {}, "胸口疼，但是没有出汗"),
    ("chest_pain_sweating", "胸痛，痛到左臂", {}, "没有胸痛，只是痛到左臂"),
    ("stroke_signs", "我爸突然嘴歪了，说话不清楚", {}, "没有口角歪斜，说话也正常"),
    ("stroke_signs", "早上起来左边手脚不能动", {}, "没有一侧肢体无力"),
    ("heavy_bleeding", "手上的伤口血流不止", {}, "伤口不大，没有大出血"),
    ("heavy_bleeding", "今天吐血了", {}, "没有呕血"),
    ("child_fever_lethargy", "宝宝高烧39.5度，精神很差", {}, "宝宝高烧，精神还可以，不嗜睡"),
    ("child_fever_lethargy", "发高烧，一直昏昏欲睡", {"age": 4}, "发高烧，一直昏昏欲睡"),
    ("difficulty_breathing", "突然喘不上气", {}, "没有呼吸困难"),
    ("loss_of_consciousness", "他刚才突然晕倒了", {}, "头晕但没有晕倒"),
    ("seizure", "孩子抽搐了两分钟", {}, "未见抽搐"),
    ("suicidal_thoughts", "最近觉得活着没意思，想自杀", {}, "心情不好，但我不想死"),
    ("pregnancy_abdominal_pain", "怀孕30周，肚子痛得厉害", {}, "怀孕30周，没有剧烈腹痛"),
    ("pregnancy_abdominal_pain", "肚子痛得受不了", {"pregnant": True}, "肚子痛得受不了"),
    ("poisoning", "老人误服了农药", {}, "没有中毒"),
]


@pytest.mark.parametrize(
    ("flag", "raises", "form", "does_not"),
    RED_FLAGS,
    ids=[f"{flag}-{i}" for i, (flag, *_rest) in enumerate(RED_FLAGS)],
)
def test_each_red_flag_says_emergency_and_its_negation_does_not(
    flag: str, raises: str, form: dict[str, Any], does_not: str
) -> None:
    found = suggest(raises, **form)
    assert flag in flags(found), (raises, flags(found))
    assert found.urgency == "emergency"
    assert found.departments[0] == "emergency"
    # The failing case: negated, or (the child's and pregnancy's flags) not that patient.
    other_form = {"age": 30} if flag == "child_fever_lethargy" and form else {}
    if flag == "pregnancy_abdominal_pain" and form:
        other_form = {"pregnant": False}
    calm = suggest(does_not, **other_form)
    assert flag not in flags(calm), (does_not, flags(calm))


def test_every_red_flag_of_the_table_is_tested() -> None:
    assert {flag.id for flag in KNOWLEDGE.red_flags} == {flag for flag, *_ in RED_FLAGS}


@pytest.mark.parametrize(
    ("text", "department", "urgency"),
    [
        ("咳嗽三天了，有痰", "respiratory", "routine"),
        ("最近老是心慌", "cardiology", "soon"),
        ("头疼好几天了", "neurology", "soon"),
        ("拉肚子，一天五六次", "gastroenterology", "soon"),
        ("右下腹痛，按着更痛", "general_surgery", "urgent"),
        ("膝盖痛，上下楼更明显", "orthopedics", "routine"),
        ("脸上长痘痘", "dermatology", "routine"),
        ("眼睛红，还有点痒", "ophthalmology", "routine"),
        ("嗓子痛，声音嘶哑", "ent", "routine"),
        ("牙疼得睡不着", "stomatology", "routine"),
        ("失眠，心情低落", "psychiatry", "soon"),
        ("口渴，尿多，血糖高", "endocrinology", "routine"),
        ("脚肿，尿里有血", "nephrology", "soon"),
        ("月经不调，痛经", "gynecology", "routine"),
        ("崴脚了，脚踝肿", "orthopedics", "urgent"),
        ("发烧38.5℃", "general_practice", "soon"),
    ],
)
def test_common_complaints_go_to_their_department(text: str, department: str, urgency: str) -> None:
    found = suggest(text, age=40)
    assert found.departments[0] == department, (text, found.departments)
    assert found.urgency == urgency
    assert found.red_flags == []
    assert set(found.departments) <= set(SPECIALTIES)


@pytest.mark.parametrize(
    ("text", "negated"),
    [
        ("咳嗽，不发烧", "fever"),
        ("咳嗽，没发烧", "fever"),
        ("咳嗽，没有发烧", "fever"),
        ("咳嗽，无发热", "fever"),
        ("咳嗽，未发热", "fever"),
        ("咳嗽，否认发热", "fever"),
        ("没有明显的胸痛", "chest_pain"),
        ("没有发烧和咳嗽", "cough"),
    ],
)
def test_negated_symptoms_do_not_match(text: str, negated: str) -> None:
    found = suggest(text)
    assert negated not in [f.symptom.id for f in found.matched]
    assert negated in [f.symptom.id for f in found.negated]


def test_negation_ends_at_the_clause_and_ignores_words_that_only_look_negative() -> None:
    # The comma, and 但, end the negation's reach.
    assert [f.symptom.id for f in suggest("不发烧，咳嗽").matched] == ["cough"]
    assert [f.symptom.id for f in suggest("没有发烧但是咳嗽").matched] == ["cough"]
    # 不停 does not negate; a negator inside a synonym (睡不着) is part of it.
    assert [f.symptom.id for f in suggest("不停地咳嗽").matched] == ["cough"]
    assert [f.symptom.id for f in suggest("晚上睡不着").matched] == ["insomnia"]
    # Said once plainly, once negated: it counts.
    assert [f.symptom.id for f in suggest("昨天不发烧，今天发烧了").matched] == ["fever"]


def test_the_longest_synonym_wins() -> None:
    assert [f.symptom.id for f in suggest("肚子痛得厉害").matched] == ["severe_abdominal_pain"]
    assert [f.symptom.id for f in suggest("嗓子痒").matched] == ["sore_throat"]
    # Full-width text and 疼/痛 are the same.
    assert [f.symptom.id for f in suggest("胸口疼　ｏｋ").matched] == ["chest_pain"]


def test_a_child_goes_to_pediatrics_unless_the_complaint_has_its_own_department() -> None:
    assert suggest("拉肚子", age=3).departments[0] == "pediatrics"
    assert suggest("孩子咳嗽").departments == ["pediatrics"]
    assert suggest("孩子咳嗽").child
    assert suggest("牙疼", age=7).departments[0] == "stomatology"
    assert suggest("孩子肚子痛").departments == ["pediatrics", "general_surgery"]
    # The form's age wins over the text; an adult is not a child.
    assert not suggest("孩子咳嗽", age=30).child
    assert suggest("咳嗽", age=30).departments == ["respiratory"]
    # The signed-in patient's own age counts when neither form nor text says.
    assert suggest("咳嗽", profile_age=6).departments == ["pediatrics"]
    assert not suggest("我家孩子咳嗽", profile_age=36, profile_sex="female").pregnant


def test_pregnancy_changes_the_department_and_the_urgency() -> None:
    plain = suggest("肚子痛", age=30, sex="female")
    assert (plain.departments[0], plain.urgency) == ("gastroenterology", "soon")
    pregnant = suggest("肚子痛", age=30, sex="female", pregnant=True)
    assert (pregnant.departments[0], pregnant.urgency) == ("gynecology", "urgent")
    assert suggest("怀孕20周，肚子痛").pregnant
    assert not suggest("没有怀孕，肚子痛").pregnant
    assert suggest("胎动减少").urgency == "urgent"
    # What only women have does not match for a man.
    assert suggest("月经不调", sex="male").matched == []


def test_unknown_text_suggests_general_practice_and_asks_for_more() -> None:
    found = suggest("你好，随便问问")
    assert (found.departments, found.urgency, found.describe_more) == (
        ["general_practice"],
        "routine",
        True,
    )
    assert found.matched == [] and found.red_flags == []


def test_the_table_is_big_enough_and_uses_only_the_shared_specialty_codes() -> None:
    assert 40 <= len(KNOWLEDGE.symptoms) <= 70
    assert set(KNOWLEDGE.departments) == set(SPECIALTIES)
