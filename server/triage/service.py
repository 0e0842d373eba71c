"""The triage (智能导诊): the patient's complaint in, a department and an urgency out, logged.

Never a diagnosis: the rules are the knowledge table's (:mod:`server.triage.knowledge`),
matched by :mod:`server.triage.matching`, and every answer carries the table's
disclaimer. With a red flag the answer's first words are the table's emergency advice
(请立即前往急诊或拨打120) and its urgency is ``emergency``.

Every suggestion is written to ``triage_logs`` in the transaction that answers it, with
its audit entry (``triage.suggest``). For a patient the log is their own data: the
suggestion goes through the access check (reason ``self``), and the patient reads their
log back through it (``GET /api/v1/triage/history``). A practitioner may try the triage
(for testing the table); the log then names no patient.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, utcnow
from server.core.errors import Forbidden, ValidationFailed
from server.core.roles import Role
from server.identity.directory import Directory
from server.triage import schemas
from server.triage.knowledge import Knowledge
from server.triage.matching import Found, Matcher, Suggestion
from server.triage.models import TriageLog

SUGGEST = "triage.suggest"
HISTORY = "triage.history"


class TriageService:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        access: AccessService,
        directory: Directory,
        knowledge: Knowledge,
    ) -> None:
        self.db = db
        self.audit = audit
        self.access = access
        self.directory = directory
        self.knowledge = knowledge
        self.matcher = Matcher(knowledge)

    async def suggest(
        self, requester: Requester, request: schemas.TriageRequest
    ) -> schemas.TriageAnswer:
        if request.pregnant and request.sex == "male":
            raise ValidationFailed.field(
                "pregnant", "only with sex female (or sex left out)", code="triage_pregnant_male"
            )
        patient_id = requester.patient_id if requester.role == Role.PATIENT else None
        async with self.access.decisions() as decide, self.db.transaction() as tx:
            profile_age: int | None = None
            profile_sex: str | None = None
            now = utcnow()
            if patient_id is not None:
                await decide.check(tx, requester, patient_id, action=SUGGEST, resources="triage")
                patient = await self.directory.patient(tx.session, patient_id)
                if patient is not None:
                    born, today = patient.birth_date, now.date()
                    profile_age = (
                        today.year - born.year - ((today.month, today.day) < (born.month, born.day))
                    )
                    profile_sex = patient.sex
            found = self.matcher.suggest(
                request.text,
                age=request.age,
                sex=request.sex,
                pregnant=request.pregnant,
                profile_age=profile_age,
                profile_sex=profile_sex,
            )
            log = TriageLog(
                patient_id=patient_id,
                user_id=requester.user_id,
                text=request.text,
                age=request.age,
                sex=request.sex,
                pregnant=request.pregnant,
                matched=[f.symptom.id for f in found.matched],
                red_flags=[flag.id for flag in found.red_flags],
                urgency=found.urgency,
                suggestion={},
                knowledge_version=self.knowledge.version,
                created_at=now,
            )
            tx.session.add(log)
            await tx.session.flush()
            answer = self._answer(log.id, found, now)
            log.suggestion = answer.model_dump(mode="json")
            await self.audit.record(
                tx.session,
                SUGGEST,
                actor=requester,
                patient_id=patient_id,
                resource=f"triage:{log.id}",
                details={"urgency": found.urgency, "red_flags": log.red_flags},
            )
        return answer

    async def history(
        self, requester: Requester, *, limit: int, before: int | None
    ) -> schemas.TriageHistory:
        """The patient's own suggestions, newest first, through the access check."""
        patient_id = requester.patient_id
        if requester.role != Role.PATIENT or patient_id is None:
            raise Forbidden("only a patient has a triage history")

        async def read(session: AsyncSession, _excluded: frozenset[str]) -> list[TriageLog]:
            query = select(TriageLog).where(TriageLog.patient_id == patient_id)
            if before is not None:
                query = query.where(TriageLog.id < before)
            rows = await session.scalars(query.order_by(TriageLog.id.desc()).limit(limit + 1))
            return list(rows)

        _, rows = await self.access.read_checked(
            requester, patient_id, read, action=HISTORY, resources="triage"
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return schemas.TriageHistory(
            items=[
                schemas.TriageHistoryItem(
                    text=row.text, answer=schemas.TriageAnswer.model_validate(row.suggestion)
                )
                for row in rows
            ],
            next_before=rows[-1].id if more and rows else None,
        )

    def _answer(self, log_id: int, found: Suggestion, at: datetime) -> schemas.TriageAnswer:
        k = self.knowledge
        advice: list[schemas.TriageWords] = []
        if found.red_flags:
            advice.append(schemas.TriageWords(zh=k.emergency_advice.zh, en=k.emergency_advice.en))
        if found.describe_more:
            advice.append(schemas.TriageWords(zh=k.fallback.zh, en=k.fallback.en))
        urgency = k.urgency[found.urgency]
        return schemas.TriageAnswer(
            id=log_id,
            advice=advice,
            emergency=bool(found.red_flags),
            red_flags=[
                schemas.TriageRedFlag(code=flag.id, zh=flag.zh, en=flag.en)
                for flag in found.red_flags
            ],
            urgency=found.urgency,
            urgency_text=schemas.TriageWords(zh=urgency.zh, en=urgency.en),
            departments=[
                schemas.TriageDepartment(
                    code=code, zh=k.departments[code].zh, en=k.departments[code].en
                )
                for code in found.departments
            ],
            matched=[_symptom(f) for f in found.matched],
            negated=[_symptom(f) for f in found.negated],
            child=found.child,
            pregnant=found.pregnant,
            describe_more=found.describe_more,
            disclaimer=schemas.TriageWords(zh=k.disclaimer.zh, en=k.disclaimer.en),
            knowledge_version=k.version,
            created_at=at,
        )


def _symptom(found: Found) -> schemas.TriageSymptom:
    s = found.symptom
    return schemas.TriageSymptom(code=s.id, zh=s.zh, en=s.en, said=found.word)
