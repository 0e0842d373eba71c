"""The triage knowledge table: symptoms, synonyms, departments, urgency and red flags.

Shipped as ``data/knowledge.yaml`` and editable; a deployment may name its own file with
``TRIAGE_KNOWLEDGE_PATH``. :func:`load_knowledge` reads and checks a file completely
(every reference resolved, every code known) and raises :class:`KnowledgeError` naming
the place of the first mistakes, so a wrong file stops the server at start, never a
request. The format is documented in ``docs/triage.md``.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.config import ENV_PREFIX, Settings, SettingsError

SHIPPED = Path(__file__).resolve().parent / "data" / "knowledge.yaml"

# The specialty codes booking and scheduling share (docs/triage.md): a department of the
# table must be one of these.
SPECIALTIES = (
    "cardiology",
    "endocrinology",
    "neurology",
    "respiratory",
    "nephrology",
    "gastroenterology",
    "orthopedics",
    "pediatrics",
    "general_surgery",
    "gynecology",
    "dermatology",
    "ophthalmology",
    "ent",
    "stomatology",
    "psychiatry",
    "emergency",
    "general_practice",
)
Urgency = Literal["emergency", "urgent", "soon", "routine"]
# Most urgent first.
URGENCIES: tuple[Urgency, ...] = ("emergency", "urgent", "soon", "routine")


class KnowledgeError(Exception):
    """The knowledge file is unreadable or wrong; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Words(_Strict):
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class Negation(_Strict):
    negators: tuple[str, ...] = Field(min_length=1)
    not_negating: tuple[str, ...] = ()
    breaks: tuple[str, ...] = ()
    window: int = Field(default=4, ge=0, le=20)


class Contexts(_Strict):
    child: tuple[str, ...] = ()
    pregnant: tuple[str, ...] = ()


class Children(_Strict):
    age_below: int = Field(default=14, ge=1, le=18)
    department: str = "pediatrics"
    replaces: tuple[str, ...] = ()


class Fallback(Words):
    department: str = "general_practice"


class Override(_Strict):
    """Departments and urgency for a child or in pregnancy, instead of the symptom's own."""

    departments: tuple[str, ...] | None = Field(default=None, min_length=1)
    urgency: Urgency | None = None


class Symptom(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=48)
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)
    synonyms: tuple[str, ...] = Field(min_length=1)
    departments: tuple[str, ...] = Field(min_length=1)
    urgency: Urgency
    sex: Literal["male", "female"] | None = None
    temperature_at_least: float | None = Field(default=None, ge=35, le=43)
    child: Override | None = None
    pregnant: Override | None = None

    @field_validator("synonyms")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for word in value:
            if not str(word).strip():
                raise ValueError("a synonym is empty")
        return value


class When(_Strict):
    child: bool | None = None
    pregnant: bool | None = None


class RedFlag(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=48)
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)
    any_of: tuple[tuple[str, ...], ...] = Field(min_length=1)
    when: When | None = None


class Knowledge(_Strict):
    version: str = Field(min_length=1, max_length=32)
    normalise: dict[str, str] = {}
    negation: Negation
    contexts: Contexts = Contexts()
    children: Children = Children()
    departments: dict[str, Words]
    fallback: Fallback
    urgency: dict[Urgency, Words]
    emergency_advice: Words
    disclaimer: Words
    symptoms: tuple[Symptom, ...] = Field(min_length=1)
    red_flags: tuple[RedFlag, ...] = ()


def normalise(text: str, replacements: dict[str, str]) -> str:
    """Full-width to half-width (NFKC), lower case, no white space, the table's replacements."""
    out = unicodedata.normalize("NFKC", text).lower()
    out = "".join(ch for ch in out if not ch.isspace())
    for old, new in replacements.items():
        out = out.replace(old, new)
    return out


def _check_references(k: Knowledge) -> list[str]:
    problems: list[str] = []
    for code in k.departments:
        if code not in SPECIALTIES:
            problems.append(
                f"departments.{code}: unknown specialty code (one of {', '.join(SPECIALTIES)})"
            )

    def department(where: str, code: str) -> None:
        if code not in k.departments:
            problems.append(f"{where}: department '{code}' is not in departments")

    department("fallback.department", k.fallback.department)
    department("children.department", k.children.department)
    for i, code in enumerate(k.children.replaces):
        department(f"children.replaces[{i}]", code)
    missing = [u for u in URGENCIES if u not in k.urgency]
    if missing:
        problems.append(f"urgency: missing {', '.join(missing)}")
    seen: dict[str, int] = {}
    for i, s in enumerate(k.symptoms):
        if s.id in seen:
            problems.append(f"symptoms[{i}].id: '{s.id}' repeats symptoms[{seen[s.id]}]")
        seen.setdefault(s.id, i)
        for j, code in enumerate(s.departments):
            department(f"symptoms[{i}] ({s.id}).departments[{j}]", code)
        for block in ("child", "pregnant"):
            override: Override | None = getattr(s, block)
            for j, code in enumerate(override.departments or () if override else ()):
                department(f"symptoms[{i}] ({s.id}).{block}.departments[{j}]", code)
    flags: set[str] = set()
    for i, flag in enumerate(k.red_flags):
        if flag.id in flags:
            problems.append(f"red_flags[{i}].id: '{flag.id}' repeats")
        flags.add(flag.id)
        for j, combination in enumerate(flag.any_of):
            if not combination:
                problems.append(f"red_flags[{i}] ({flag.id}).any_of[{j}]: empty")
            for symptom_id in combination:
                if symptom_id not in seen:
                    problems.append(
                        f"red_flags[{i}] ({flag.id}).any_of[{j}]: unknown symptom '{symptom_id}'"
                    )
    # Two symptoms claiming the same words: the table would contradict itself.
    owner: dict[str, str] = {}
    for s in k.symptoms:
        for word in s.synonyms:
            key = normalise(word, k.normalise)
            if not key:
                problems.append(f"symptoms ({s.id}): synonym '{word}' is empty once normalised")
            elif owner.setdefault(key, s.id) != s.id:
                problems.append(
                    f"symptoms ({s.id}): synonym '{word}' is also a synonym of {owner[key]}"
                )
    return problems


def _place(loc: tuple[int | str, ...]) -> str:
    """``symptoms[7].urgency``: where in the file, as the problems of references say it."""
    place = ""
    for part in loc:
        place += f"[{part}]" if isinstance(part, int) else f".{part}" if place else str(part)
    return place or "top"


def parse_knowledge(raw: Any, origin: str) -> Knowledge:
    """Check a decoded table; :class:`KnowledgeError` lists the first mistakes and where."""
    if not isinstance(raw, dict):
        raise KnowledgeError(f"{origin}: expected a mapping at the top (version, symptoms, …)")
    try:
        knowledge = Knowledge.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{_place(err['loc'])}: "
            f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise KnowledgeError(f"{origin}: " + "; ".join(problems[:5])) from None
    problems = _check_references(knowledge)
    if problems:
        raise KnowledgeError(f"{origin}: " + "; ".join(problems[:5]))
    return knowledge


def load_knowledge(path: Path | None = None) -> Knowledge:
    """The table at ``path`` (the shipped one when None), completely checked."""
    path = path or SHIPPED
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KnowledgeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KnowledgeError(f"{path}: not UTF-8 text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise KnowledgeError(f"{path}: not valid YAML{where}") from None
    return parse_knowledge(raw, str(path))


@functools.lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int) -> Knowledge:
    return load_knowledge(path)


def knowledge_for(settings: Settings) -> Knowledge:
    """The table the settings name (``TRIAGE_KNOWLEDGE_PATH``), or the shipped one.

    A wrong override stops the server at start with a message naming the setting and
    the mistake. Parsed once per file version (apps are built often in one process)."""
    path = settings.triage_knowledge_path or SHIPPED
    try:
        return _cached(path, path.stat().st_mtime_ns)
    except OSError as exc:
        problem = f"{path}: cannot read: {exc.strerror or exc}"
    except KnowledgeError as exc:
        problem = str(exc)
    raise SettingsError(f"{ENV_PREFIX}TRIAGE_KNOWLEDGE_PATH: {problem}")
