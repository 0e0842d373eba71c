"""`yihao payments reconcile --date D`: the day's settlement, and every mismatch with the provider."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import update

from server.config import Settings
from server.container import Services
from server.payments.models import SandboxTrade
from tests.helpers import Api
from tests.payments.support import book, order, wait_status


async def _reconcile(settings: Settings, day: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ["PATH"],
        "YIHAO_DATA_DIR": str(settings.data_dir),
        "YIHAO_SECRET_KEY": settings.secret_key,
        "YIHAO_LOG_LEVEL": "WARNING",
        # The operator's run only reads: its own reconciliation job stays off.
        "YIHAO_PAYMENTS_RECONCILE_INTERVAL_SECONDS": "0",
        "YIHAO_PAYMENTS_SANDBOX": "true",
    }
    if settings.database_url:
        environ["YIHAO_DATABASE_URL"] = settings.database_url
        environ["YIHAO_CHECKPOINT_KEY_FILE"] = str(settings.checkpoint_key_file)
    # In a thread: the app's own jobs (the outbound dispatch) keep running and commit, so an
    # open write of theirs never holds SQLite's lock while the loop waits on the CLI.
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", "payments", "reconcile", "--date", day],
        env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def _paid(api: Api, services: Services, patient: str) -> dict:  # type: ignore[type-arg]
    appointment = await book(api, services, patient=patient)
    created = await order(api, patient, appointment["id"])
    await api.post(created["pay"]["pay_url"], as_=patient)
    return await wait_status(api, patient, created["id"], "paid")


async def test_the_days_settlement_and_a_mismatch(
    api: Api, network: Services, settings: Settings
) -> None:
    first = await _paid(api, network, "patient_wang")
    second = await _paid(api, network, "patient_liu")
    status, _ = await api.post(f"/api/v1/orders/{second['id']}/refund", as_="patient_liu", json={})
    assert status == 200
    today = datetime.now(ZoneInfo(settings.schedule_timezone)).date().isoformat()

    clean = await _reconcile(settings, today)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    lines = clean.stdout.splitlines()
    assert lines[0] == f"settlement {today} (Asia/Shanghai)"
    assert "  QDFY 青岛大学附属医院: paid 2 = ¥60.00, refunded 1 = ¥30.00, net ¥30.00" in lines
    assert "total: paid 2 = ¥60.00, refunded 1 = ¥30.00, net ¥30.00" in lines
    assert lines[-1] == "mismatches: 0"

    # The provider's side says otherwise about the first order (refunded there, and less).
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(SandboxTrade)
            .where(SandboxTrade.out_trade_no == first["out_trade_no"])
            .values(amount_fen=2900)
        )
    found = await _reconcile(settings, today)
    assert found.returncode == 1, found.stdout + found.stderr
    assert (
        f"MISMATCH order {first['id']} ({first['out_trade_no']}): ours paid 3000, "
        "provider SUCCESS 2900 [amount]"
    ) in found.stdout.splitlines()
    assert found.stdout.splitlines()[-1] == "mismatches: 1"
    # Another day has nothing to settle.
    empty = await _reconcile(settings, "2020-01-01")
    assert empty.returncode == 0
    assert "total: paid 0 = ¥0.00, refunded 0 = ¥0.00, net ¥0.00" in empty.stdout
    bad = await _reconcile(settings, "yesterday")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
