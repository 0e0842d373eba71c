"""Alembic environment: runs on the connection handed in by ``server.core.db``.

The history is one linear chain ``0001`` … ``00NN`` (each file named after its revision).
It used to branch after ``0001``/``0002`` and merge in an empty ``0004``; a database
migrated before the chain was made linear still holds the old ids in ``alembic_version``
(several rows, when it stopped between the branches), and they are rewritten to the new
ids before upgrading, in the same transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from server.models import Base

# The new position of each old revision: the branch revisions took 0003…0007 in this
# order, and everything after the old merge (0004) moved up by three.
OLD_REVISIONS: dict[str, int] = {
    "0001": 1,
    "0002": 2,
    "leases_0001": 3,
    "records_0001": 4,
    "consults_0001": 5,
    "prescriptions_0001": 6,
    "scheduling_0001": 7,
    "0004": 7,  # the empty merge: every branch applied
    "0005": 8,
    "0006": 9,
    "0007": 10,
    "0008": 11,
    "0009": 12,
}
# What each old revision implies was applied before it (its ancestors, in new positions).
OLD_ANCESTORS: dict[str, set[int]] = {
    "0001": {1},
    "0002": {1, 2},
    "leases_0001": {1, 3},
    "records_0001": {1, 4},
    "consults_0001": {1, 2, 5},
    "prescriptions_0001": {1, 2, 6},
    "scheduling_0001": {1, 2, 7},
    **{old: set(range(1, new + 1)) for old, new in OLD_REVISIONS.items() if new >= 7},
}
BRANCH_IDS = {"leases_0001", "records_0001", "consults_0001", "prescriptions_0001"}
BRANCH_IDS |= {"scheduling_0001"}
# Old 0004…0009 are also ids of the new chain (with other meanings). The schema tells
# them apart: a database at new N lacks the table that new N+1 creates, while one at
# old N (new N+3) has it.
NEXT_TABLE: dict[str, str] = {
    "0004": "consults",
    "0005": "prescriptions",
    "0006": "inbox_items",
    "0007": "recordings",
    "0008": "cluster_nodes",
    "0009": "presence_codes",
}


def new_id(position: int) -> str:
    return f"{position:04d}"


def translate_old_ids(connection: Connection) -> None:
    """Rewrite a pre-linear ``alembic_version`` to the one row of the new chain."""
    if not inspect(connection).has_table("alembic_version"):
        return
    rows = {r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version"))}
    if not rows:
        return
    if len(rows) == 1:
        (only,) = rows
        old = only in BRANCH_IDS or (
            only in NEXT_TABLE and inspect(connection).has_table(NEXT_TABLE[only])
        )
        if not old:
            return  # an id of the new chain (0001 and 0002 mean the same in both)
    elif not rows <= set(OLD_REVISIONS) or not rows & BRANCH_IDS:
        raise RuntimeError(f"alembic_version holds several unknown revisions: {sorted(rows)}")
    applied: set[int] = set()
    for row in rows:
        applied |= OLD_ANCESTORS[row]
    head = max(applied)
    if applied != set(range(1, head + 1)):
        # Some branch is missing below another that ran: the linear chain cannot express
        # it without re-running or skipping a migration.
        missing = sorted(set(range(1, head + 1)) - applied)
        raise RuntimeError(
            f"alembic_version {sorted(rows)} skips revisions {[new_id(m) for m in missing]} "
            "of the linear history; bring it to the old heads with the previous release first"
        )
    connection.execute(text("DELETE FROM alembic_version"))
    connection.execute(
        text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": new_id(head)}
    )


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `yihao migrate`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    translate_old_ids(connection)
    context.run_migrations()
