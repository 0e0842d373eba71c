"""What an order can be for: the subject resolvers (``kind → (session, id) → Subject``).

Payments knows appointments itself (through the scheduling service); visits,
prescriptions and consults register their resolver in ``server/app.py`` when their
capability offers one, so payments never reads their tables.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.db import utcnow
from server.payments.service import Subject, SubjectResolver
from server.scheduling.service import SchedulingService


def appointment_resolver(scheduling: SchedulingService) -> SubjectResolver:
    async def resolve(session: AsyncSession, appointment_id: int) -> Subject | None:
        facts = await scheduling.appointment_facts(session, appointment_id)
        if facts is None:
            return None
        return Subject(
            patient_id=facts.patient_id,
            institution_id=facts.institution_id,
            department_id=facts.department_id,
            served=facts.start <= utcnow(),
            payable=facts.status == "booked",
            description="预约挂号",
        )

    return resolve
