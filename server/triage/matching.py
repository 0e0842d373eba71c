"""Matching a patient's own words against the knowledge table.

No word segmentation (jieba is not a dependency): the text is normalised
(:func:`~server.triage.knowledge.normalise`) and every synonym of the table is looked for
as a substring. Where synonyms overlap, the longest wins (``剧烈腹痛`` is severe abdominal
pain, not also abdominal pain; ``嗓子痒`` is a sore throat, not itching), and a symptom
counts once however often it is written.

A symptom is **negated** (``不发烧``, ``没有胸痛``, ``无出汗``, ``未见抽搐``) when a negator of
the table stands before it in the same clause, with at most ``window`` characters between
them once other symptoms and the conjunctions 和/或/及/与/跟/、 are left out (so in
``没有发烧和咳嗽`` both are negated). A clause ends at punctuation and at the table's break
words (``但``, ``可是``…); words that begin with a negator without negating (``不停``,
``不舒服``) are not negators, and a negator inside a synonym (``睡不着``, ``没精神``) is part
of that symptom.

Who is ill comes from the form first (age, sex, pregnancy), then from the text (``宝宝``,
``怀孕``, negatable too), then from the signed-in patient's registration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.triage.knowledge import URGENCIES, Knowledge, RedFlag, Symptom, Urgency, normalise

CLAUSE_ENDS = frozenset(",，.。;；!！?？:：\n")
CONJUNCTIONS = frozenset("和或及与跟、")
CHILD = "@child"
PREGNANT = "@pregnant"
# 39度, 38.5度, 39度5, 38.5°c (℃ after NFKC)
TEMPERATURE = re.compile(r"(\d{2}(?:\.\d)?)(?:度|°c|°)(\d(?!\d))?")
URGENCY_WEIGHT = {"emergency": 4.0, "urgent": 3.0, "soon": 2.0, "routine": 1.0}
MAX_DEPARTMENTS = 3


@dataclass(frozen=True)
class Span:
    key: str  # a symptom id, CHILD or PREGNANT
    word: str  # what matched, as normalised
    start: int
    end: int
    negated: bool = False


@dataclass(frozen=True)
class Found:
    symptom: Symptom
    word: str


@dataclass
class Suggestion:
    matched: list[Found]
    negated: list[Found]
    red_flags: list[RedFlag]
    departments: list[str]
    urgency: Urgency
    child: bool
    pregnant: bool
    describe_more: bool


class Matcher:
    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge
        self.symptoms = {s.id: s for s in knowledge.symptoms}
        rules = knowledge.normalise
        terms: dict[str, str] = {}
        for word in knowledge.contexts.child:
            terms.setdefault(normalise(word, rules), CHILD)
        for word in knowledge.contexts.pregnant:
            terms.setdefault(normalise(word, rules), PREGNANT)
        for symptom in knowledge.symptoms:
            for word in symptom.synonyms:
                terms[normalise(word, rules)] = symptom.id
        # Longest first: the longest synonym wins where two overlap.
        self.terms = sorted(terms.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        negation = knowledge.negation
        self.negators = sorted((normalise(w, rules) for w in negation.negators), key=len)[::-1]
        self.not_negating = sorted((normalise(w, rules) for w in negation.not_negating), key=len)[
            ::-1
        ]
        self.breaks = sorted((normalise(w, rules) for w in negation.breaks), key=len)[::-1]
        self.window = negation.window
        self.by_temperature = sorted(
            (s for s in knowledge.symptoms if s.temperature_at_least is not None),
            key=lambda s: -(s.temperature_at_least or 0),
        )

    # --- the text ------------------------------------------------------------------------

    def spans(self, text: str) -> list[Span]:
        """Every symptom and context word in ``text`` (normalised), negated or not."""
        taken = [False] * len(text)
        found: list[Span] = []
        for word, key in self.terms:
            start = text.find(word)
            while start != -1:
                end = start + len(word)
                if not any(taken[start:end]):
                    taken[start:end] = [True] * len(word)
                    found.append(Span(key, word, start, end))
                start = text.find(word, start + 1)
        for match in TEMPERATURE.finditer(text):
            start, end = match.span()
            if any(taken[start:end]):
                continue
            value = float(match.group(1)) + (int(match.group(2)) / 10 if match.group(2) else 0)
            symptom = next(
                (s for s in self.by_temperature if value >= (s.temperature_at_least or 99)), None
            )
            if symptom is not None and value <= 43:
                taken[start:end] = [True] * (end - start)
                found.append(Span(symptom.id, match.group(0), start, end))
        found.sort(key=lambda s: s.start)
        negators, stops = self._negators_and_stops(text, taken)
        return [
            Span(s.key, s.word, s.start, s.end, self._negated(text, s, found, negators, stops))
            for s in found
        ]

    def _negators_and_stops(
        self, text: str, taken: list[bool]
    ) -> tuple[list[tuple[int, int]], list[int]]:
        negators: list[tuple[int, int]] = []
        stops: list[int] = []
        i = 0
        while i < len(text):
            if taken[i]:
                i += 1
                continue
            if text[i] in CLAUSE_ENDS:
                stops.append(i)
                i += 1
                continue
            skip = next((w for w in self.not_negating if text.startswith(w, i)), None)
            if skip is not None:
                i += len(skip)
                continue
            stop = next((w for w in self.breaks if text.startswith(w, i)), None)
            if stop is not None:
                stops.append(i)
                i += len(stop)
                continue
            negator = next((w for w in self.negators if text.startswith(w, i)), None)
            if negator is not None:
                negators.append((i, i + len(negator)))
                i += len(negator)
                continue
            i += 1
        return negators, stops

    def _negated(
        self,
        text: str,
        span: Span,
        spans: list[Span],
        negators: list[tuple[int, int]],
        stops: list[int],
    ) -> bool:
        for _start, end in negators:
            if end > span.start:
                break
            if any(end <= stop < span.start for stop in stops):
                continue
            gap = [
                ch
                for i, ch in enumerate(text[end : span.start], start=end)
                if ch not in CONJUNCTIONS and not any(o.start <= i < o.end for o in spans)
            ]
            if len(gap) <= self.window:
                return True
        return False

    # --- the suggestion ------------------------------------------------------------------

    def suggest(
        self,
        text: str,
        *,
        age: int | None = None,
        sex: str | None = None,
        pregnant: bool | None = None,
        profile_age: int | None = None,
        profile_sex: str | None = None,
    ) -> Suggestion:
        k = self.knowledge
        spans = self.spans(normalise(text, k.normalise))
        said = {s.key for s in spans if not s.negated}
        # The form first; then what the text says; then who is signed in (unless the text
        # is about a child, whose age and sex the account does not tell).
        about_child = CHILD in said
        if age is not None:
            child = age < k.children.age_below
        elif about_child:
            child = True
        else:
            child = profile_age is not None and profile_age < k.children.age_below
        if sex is None and not about_child:
            sex = profile_sex
        if pregnant is None:
            pregnant = PREGNANT in said and sex != "male" and not child
        matched: dict[str, Found] = {}
        negated: dict[str, Found] = {}
        for span in spans:
            symptom = self.symptoms.get(span.key)
            if symptom is None or (symptom.sex is not None and sex not in (None, symptom.sex)):
                continue
            target = negated if span.negated else matched
            target.setdefault(symptom.id, Found(symptom, span.word))
        for symptom_id in matched:
            negated.pop(symptom_id, None)  # said once without a negator: it counts
        flags = [
            flag
            for flag in k.red_flags
            if _applies(flag, child=child, pregnant=pregnant)
            and any(set(combination) <= matched.keys() for combination in flag.any_of)
        ]
        scores: dict[str, float] = {}
        urgencies: list[Urgency] = []
        for found in matched.values():
            departments, urgency = self._for(found.symptom, child=child, pregnant=pregnant)
            urgencies.append(urgency)
            for rank, code in enumerate(departments):
                scores[code] = scores.get(code, 0.0) + URGENCY_WEIGHT[urgency] / (rank + 1)
        ranked = sorted(scores, key=lambda code: -scores[code])  # stable: first seen first
        if flags:
            ranked = ["emergency", *(c for c in ranked if c != "emergency")]
            urgencies.append("emergency")
        if not ranked:
            ranked = [k.fallback.department]
        urgency = next((u for u in URGENCIES if u in urgencies), "routine")
        return Suggestion(
            matched=list(matched.values()),
            negated=list(negated.values()),
            red_flags=flags,
            departments=[c for c in ranked if c in k.departments][:MAX_DEPARTMENTS],
            urgency=urgency,
            child=child,
            pregnant=pregnant,
            describe_more=not matched,
        )

    def _for(
        self, symptom: Symptom, *, child: bool, pregnant: bool
    ) -> tuple[tuple[str, ...], Urgency]:
        departments, urgency = symptom.departments, symptom.urgency
        override = (
            symptom.pregnant
            if pregnant and symptom.pregnant is not None
            else symptom.child
            if child and symptom.child is not None
            else None
        )
        if override is not None:
            return override.departments or departments, override.urgency or urgency
        if child:
            rules = self.knowledge.children
            departments = tuple(
                dict.fromkeys(rules.department if c in rules.replaces else c for c in departments)
            )
        return departments, urgency


def _applies(flag: RedFlag, *, child: bool, pregnant: bool) -> bool:
    when = flag.when
    if when is None:
        return True
    if when.child is not None and when.child != child:
        return False
    return when.pregnant is None or when.pregnant == pregnant
