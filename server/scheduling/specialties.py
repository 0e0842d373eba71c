"""The specialty codes of the network's departments (科室), with their Chinese and English names.

A department's profile names one of these codes. Triage maps complaints to the same codes
and the booking page filters by them, so a code, once shipped, never changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Specialty:
    code: str
    zh: str
    en: str


SPECIALTIES: tuple[Specialty, ...] = (
    Specialty("cardiology", "心血管内科", "Cardiology"),
    Specialty("endocrinology", "内分泌科", "Endocrinology"),
    Specialty("neurology", "神经内科", "Neurology"),
    Specialty("respiratory", "呼吸内科", "Respiratory medicine"),
    Specialty("nephrology", "肾内科", "Nephrology"),
    Specialty("gastroenterology", "消化内科", "Gastroenterology"),
    Specialty("orthopedics", "骨科", "Orthopedics"),
    Specialty("pediatrics", "儿科", "Pediatrics"),
    Specialty("general_surgery", "普通外科", "General surgery"),
    Specialty("gynecology", "妇科", "Gynecology"),
    Specialty("dermatology", "皮肤科", "Dermatology"),
    Specialty("ophthalmology", "眼科", "Ophthalmology"),
    Specialty("ent", "耳鼻咽喉科", "Otorhinolaryngology (ENT)"),
    Specialty("stomatology", "口腔科", "Stomatology"),
    Specialty("psychiatry", "精神心理科", "Psychiatry"),
    Specialty("emergency", "急诊科", "Emergency medicine"),
    Specialty("general_practice", "全科医学科", "General practice"),
)

BY_CODE: dict[str, Specialty] = {s.code: s for s in SPECIALTIES}
CODES: tuple[str, ...] = tuple(BY_CODE)

# The demo network's department names → their specialty (seeding and the desk's default).
DEPARTMENT_NAMES: dict[str, str] = {
    "心内科": "cardiology",
    "内分泌科": "endocrinology",
    "神经内科": "neurology",
    "呼吸内科": "respiratory",
    "肾内科": "nephrology",
    "消化内科": "gastroenterology",
    "骨科": "orthopedics",
    "儿科": "pediatrics",
    "普外科": "general_surgery",
    "妇科": "gynecology",
    "皮肤科": "dermatology",
    "眼科": "ophthalmology",
    "耳鼻喉科": "ent",
    "口腔科": "stomatology",
    "精神科": "psychiatry",
    "急诊科": "emergency",
    "全科": "general_practice",
}
