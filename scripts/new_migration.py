"""Autogenerate a migration against a scratch SQLite database at the current head.

The new revision takes the next number of the linear history as its id and file name.

.venv/bin/python scripts/new_migration.py "add consults"
"""

import asyncio
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from server.config import load_settings
from server.core.db import Database, alembic_config


async def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(load_settings(environ={}, data_dir=Path(tmp)))
        await db.migrate()

        def revise(connection: object) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            head = ScriptDirectory.from_config(cfg).get_current_head()
            rev_id = f"{int(head or 0) + 1:04d}"
            command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)

        async with db.engine.begin() as conn:
            await conn.run_sync(revise)
        await db.dispose()


asyncio.run(main(sys.argv[1]))
