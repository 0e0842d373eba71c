"""The ``yihao`` command: run the server and administer it without the web client.

    yihao serve [--host H] [--port P] [--workers N] [--config FILE]
    yihao migrate
    yihao seed-demo
    yihao import-fhir PATH… --institution CODE
    yihao audit verify [--expect-checkpoint N:HASH]
    yihao audit checkpoint      (sign the audit head now)
    yihao audit keygen FILE     (a new checkpoint key; prints its public half)
    yihao verify-signatures
    yihao drugs load [FILE]     (the drug catalogue; default: the demo catalogue)
    yihao institution create --code QDSL --name 青岛市立医院 --kind tertiary [--region 370202]
    yihao user create --username dr_li --password … --role specialist --institution QDSL
                      [--name 李明] [--title 主任医师] [--department 心内科] [--resident-id …]
    yihao user totp --username dr_li
    yihao user disable|enable|unlock --username dr_li   (disable ends every session at once)
    yihao cluster [--nodes 3] [--port 8080] [--no-nginx] [--web-dir DIR] [--no-heal]
    yihao recordings purge [--dry-run]   (remove consult recordings past their retention)
    yihao payments reconcile --date 2026-12-04   (the day's settlement; exit 1 on mismatches)

Exit codes: 0 success, 1 the operation was refused (the message says why),
2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from server.config import Settings, SettingsError, load_settings
from server.core.api import SERVICES, field_errors
from server.core.errors import YihaoError
from server.core.observability import QuerylessAccessLogger, setup_logging
from server.identity import schemas


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Any]:
    """The app's services, started as for serving (migrations included) but not listening."""
    from server.app import create_app

    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield app[SERVICES]
    finally:
        await runner.cleanup()


def _with_services(settings: Settings, work: Callable[[Any], Awaitable[int]]) -> int:
    async def run() -> int:
        async with running(settings) as services:
            return await work(services)

    return asyncio.run(run())


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from server import workers

    if settings.checkpoint_key_file is None:
        # A public key alone verifies; a server must sign (a practitioner's first key).
        print(
            "yihao: settings: YIHAO_CHECKPOINT_KEY_FILE: required to serve "
            "(YIHAO_CHECKPOINT_PUBLIC_KEY_FILE alone is for verifying)",
            file=sys.stderr,
        )
        return 2
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.with_overrides(**overrides)
    try:
        loop_factory = workers.event_loop_factory(settings.event_loop)
        count = 1 if args.worker else workers.resolve_workers(settings, args.workers)
    except workers.WorkersError as exc:
        print(f"yihao: serve: {exc}", file=sys.stderr)
        return 2
    if count > 1:
        return _serve_workers(args, settings, count)
    if not args.worker:
        print(f"Yihao serving on {settings.effective_public_url}", file=sys.stderr)
    _run_app(settings, loop_factory, args.worker)
    return 0


def _run_app(
    settings: Settings,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    worker: tuple[int, int] | None,
) -> None:
    """One server process: the whole server, or one worker of ``yihao serve --workers N``."""
    from server.app import create_app
    from server.workers import prepare_worker

    loop = loop_factory() if loop_factory is not None else None
    if loop is not None:
        asyncio.set_event_loop(loop)
    logging.getLogger("server.workers").info(
        "event loop", extra={"event_loop": type(loop).__module__ if loop else "asyncio"}
    )
    app = create_app(settings)
    if worker is not None:
        prepare_worker(app, worker[1])
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        # Workers share the port; the kernel balances new connections between them.
        reuse_port=worker is not None or None,
        # Off by default (setup_logging quiets aiohttp.access); when switched on, the lines
        # leave out query strings, which can carry patient names and resident IDs.
        access_log=logging.getLogger("aiohttp.access"),
        access_log_class=QuerylessAccessLogger,
        print=None,
        shutdown_timeout=10,
        loop=loop,
    )


def _serve_workers(args: argparse.Namespace, settings: Settings, count: int) -> int:
    """The supervisor of ``count`` workers (server/workers.py)."""
    import os

    from server import workers

    try:
        workers.check_port_free(settings.host, settings.port)
        base = workers.node_base(settings)
        if len(workers.worker_node_id(base, count - 1)) > workers.NODE_ID_MAX:
            raise workers.WorkersError(
                f"YIHAO_NODE_ID: each worker's id is <id>/w<index>, at most "
                f"{workers.NODE_ID_MAX} characters; shorten it"
            )
    except workers.WorkersError as exc:
        print(f"yihao: serve: {exc}", file=sys.stderr)
        return 2
    environ = dict(os.environ)
    if settings.effective_auto_migrate:
        # Once, here, not N times at once in the workers.
        from server.core.db import migrate_sync

        migrate_sync(settings)
        environ["YIHAO_AUTO_MIGRATE"] = "false"

    def argv(index: int, fd: int) -> list[str]:
        config = ["--config", str(args.config)] if args.config else []
        return [
            sys.executable, "-m", "server.cli", *config, "serve",
            "--host", settings.host, "--port", str(settings.port), "--worker", f"{index}:{fd}",
        ]  # fmt: skip

    print(
        f"Yihao serving on {settings.effective_public_url} with {count} worker processes",
        file=sys.stderr,
    )
    supervisor = workers.Supervisor(argv, environ, count, base)
    return asyncio.run(supervisor.run())


def _worker_arg(value: str) -> tuple[int, int]:
    index, _, fd = value.partition(":")
    return int(index), int(fd)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from server.core.db import migrate_sync

    migrate_sync(settings)
    print("database is at the latest schema")
    return 0


def cmd_seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    from server.seed import seed_demo

    async def work(services: Any) -> int:
        created = await seed_demo(services)
        print(
            f"demo network ready: {created['institutions']} institutions and "
            f"{created['users']} accounts created"
        )
        return 0

    return _with_services(settings, work)


def cmd_drugs_load(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from server.prescriptions.catalogue import DEMO_CATALOGUE, CatalogueError

    async def work(services: Any) -> int:
        path = Path(args.file) if args.file else DEMO_CATALOGUE
        try:
            counts = await services.prescriptions.catalogue.load_file(path)
        except CatalogueError as exc:
            print(f"yihao: {exc}", file=sys.stderr)
            return 1
        print(
            f"drug catalogue loaded: {counts['drugs']} drugs, {counts['interactions']} "
            f"interaction pairs, {counts['chronic_conditions']} chronic conditions"
        )
        return 0

    return _with_services(settings, work)


def cmd_import_fhir(args: argparse.Namespace, settings: Settings) -> int:
    from server.records.importer import bundle_files, import_files

    try:
        files = bundle_files(args.paths)
    except FileNotFoundError as exc:
        print(f"yihao: {exc}", file=sys.stderr)
        return 2

    def progress(done: int, total: int, path: Any, note: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done == total or not sys.stderr.isatty() else "\r"
        print(f"[{bar}] {done}/{total} {path.name[:40]} ({note})", end=end, file=sys.stderr)

    async def work(services: Any) -> int:
        summary = await import_files(services, files, args.institution, progress)
        types = ", ".join(f"{t} {n}" for t, n in summary.types.most_common())
        print(
            f"imported {summary.bundles}/{summary.files} bundles for {args.institution} in "
            f"{summary.seconds:.1f}s: {summary.created} created, {summary.updated} updated"
            f" ({types or 'nothing'}); resident IDs added: {summary.ids_added}"
        )
        for path, problem in summary.failed:
            print(f"  failed: {path}: {problem}")
        return 1 if summary.failed else 0

    return _with_services(settings, work)


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The hash chain, every signed checkpoint, and the chain against the checkpoints."""
    from server.core.checkpoints import signed_at

    async def work(services: Any) -> int:
        report = await services.checkpoints.verify_audit()
        chain, checkpoints = report.chain, report.checkpoints
        ok = report.ok
        if chain.ok:
            print(f"audit chain intact: {chain.checked} entries verified")
        else:
            print(
                f"audit chain BROKEN at entry {chain.broken_at}: {chain.problem} "
                f"({chain.checked} entries verified before it)"
            )
        for problem in checkpoints.problems:
            print(f"audit checkpoints BROKEN: {problem}")
        latest = checkpoints.latest
        if latest is None:
            print("no signed checkpoint yet: every entry is verified by the hash chain alone")
        else:
            covered = latest.content["audit"]["seq"]
            print(
                f"{checkpoints.checked} signed checkpoints verified; the latest, checkpoint "
                f"{latest.seq} of {signed_at(latest)} (hash {latest.hash}), "
                f"covers entries up to {covered}; entries after it are verified by the hash "
                "chain alone"
            )
        if args.expect_checkpoint:
            problem = await services.checkpoints.check_expected(args.expect_checkpoint)
            if problem:
                print(f"audit checkpoints BROKEN: {problem}")
                ok = False
        return 0 if ok else 1

    return _with_services(settings, work)


def cmd_audit_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Any) -> int:
        row = await services.checkpoints.checkpoint("manual")
        print(
            f"checkpoint {row.seq} signed: audit entries up to {row.content['audit']['seq']} "
            f"(hash {row.hash})"
        )
        return 0

    return _with_services(settings, work)


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from server.core.checkpoints import generate_key_file, public_key_pem

    try:
        public = generate_key_file(Path(args.file))
    except FileExistsError:
        print(f"yihao: {args.file} exists; a checkpoint key is never overwritten", file=sys.stderr)
        return 1
    print(f"checkpoint key written to {args.file} (mode 0600); its public key:")
    print(public_key_pem(public), end="")
    return 0


def cmd_verify_signatures(args: argparse.Namespace, settings: Settings) -> int:
    """Check every signed prescription and consult opinion; name each one that was changed."""

    async def work(services: Any) -> int:
        key_problems = await services.checkpoints.check_keys()
        rx_checked, rx_broken = await services.prescriptions.verify_all()
        op_checked, op_broken = await services.consults.verify_opinions()
        for user_id, problem in key_problems:
            print(f"signing key of user {user_id}: TAMPERED — {problem}")
        for rx_id, problem in rx_broken:
            print(f"prescription {rx_id}: TAMPERED — {problem}")
        for consult_id, problem in op_broken:
            print(f"consult {consult_id} opinion: TAMPERED — {problem}")
        print(
            f"signatures: {rx_checked} prescriptions, {op_checked} consult opinions checked; "
            f"{len(rx_broken) + len(op_broken)} do not verify"
        )
        return 1 if rx_broken or op_broken or key_problems else 0

    return _with_services(settings, work)


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100}.{abs(fen) % 100:02d}"


def cmd_payments_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """The day's settlement per institution, and every order the provider sees otherwise."""
    from datetime import date

    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        print(f"yihao: payments reconcile: --date {args.date!r}: use YYYY-MM-DD", file=sys.stderr)
        return 2

    async def work(services: Any) -> int:
        report = await services.payments.reconcile_day(day)
        names = {i.id: f"{i.code} {i.name}" for i in await services.identity.list_institutions()}
        print(f"settlement {day.isoformat()} ({settings.schedule_timezone})")
        paid = refunded = paid_n = refunded_n = 0
        for line in report.settlement:
            print(
                f"  {names.get(line.institution_id, line.institution_id)}: "
                f"paid {line.paid_count} = {_yuan(line.paid_fen)}, "
                f"refunded {line.refunded_count} = {_yuan(line.refunded_fen)}, "
                f"net {_yuan(line.paid_fen - line.refunded_fen)}"
            )
            paid, refunded = paid + line.paid_fen, refunded + line.refunded_fen
            paid_n, refunded_n = paid_n + line.paid_count, refunded_n + line.refunded_count
        print(
            f"total: paid {paid_n} = {_yuan(paid)}, refunded {refunded_n} = {_yuan(refunded)}, "
            f"net {_yuan(paid - refunded)}"
        )
        for m in report.mismatches:
            print(
                f"MISMATCH order {m.order_id} ({m.out_trade_no}): ours {m.ours}, "
                f"provider {m.provider} [{m.reason}]"
            )
        print(f"mismatches: {len(report.mismatches)}")
        return 1 if report.mismatches else 0

    return _with_services(settings, work)


def cmd_institution_create(args: argparse.Namespace, settings: Settings) -> int:
    data = schemas.InstitutionCreate(
        code=args.code, name=args.name, kind=args.kind, region=args.region
    )

    async def work(services: Any) -> int:
        out = await services.identity.create_institution(None, data)
        print(f"institution {out.code} created (id {out.id})")
        return 0

    return _with_services(settings, work)


def cmd_user_create(args: argparse.Namespace, settings: Settings) -> int:
    fields = {
        "username": args.username, "password": args.password, "role": args.role,
        "institution": args.institution, "name": args.name, "title": args.title,
        "department": args.department, "resident_id": args.resident_id,
    }  # fmt: skip
    data = schemas.UserCreate(**{k: v for k, v in fields.items() if v is not None})

    async def work(services: Any) -> int:
        out = await services.identity.create_user(None, data)
        print(f"user {out.username} created (id {out.id}, role {out.role})")
        return 0

    return _with_services(settings, work)


def cmd_user_totp(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Any) -> int:
        uri = await services.auth.enrol_totp(args.username)
        print(f"TOTP enrolled for {args.username}; add to an authenticator app:\n{uri}")
        return 0

    return _with_services(settings, work)


def cmd_user_access(args: argparse.Namespace, settings: Settings) -> int:
    """disable / enable / unlock, as the operator (audited with no actor)."""

    async def work(services: Any) -> int:
        auth = services.auth
        if args.sub == "unlock":
            state = await auth.unlock(None, args.username)
        else:
            state = await auth.set_active(None, args.username, args.sub == "enable")
        print(
            f"user {state.username}: {'active' if state.active else 'disabled'}, "
            f"{'locked' if state.locked else 'not locked'}; "
            f"{state.sessions_ended} session(s) ended"
        )
        return 0

    return _with_services(settings, work)


def cmd_referrals_expire(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Any) -> int:
        expired = await services.referrals.expire_overdue()
        print(f"{len(expired)} unanswered referrals expired")
        return 0

    return _with_services(settings, work)


def cmd_recordings_purge(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Any) -> int:
        ids = await services.recording.purge(dry_run=args.dry_run)
        days = settings.recording_retention_days
        listed = ", ".join(str(i) for i in ids) or "none"
        if args.dry_run:
            print(f"{len(ids)} recordings older than {days} days would be purged: {listed}")
        else:
            print(f"{len(ids)} recordings older than {days} days purged: {listed}")
        return 0

    return _with_services(settings, work)


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    import os
    from pathlib import Path

    from server.cluster import ClusterError, serve_cluster

    if settings.is_sqlite or not settings.redis_url:
        print(
            "yihao: cluster: set YIHAO_DATABASE_URL (PostgreSQL) and YIHAO_REDIS_URL; "
            "the nodes share them",
            file=sys.stderr,
        )
        return 2
    # Every node gets this command's settings: its YIHAO_ variables and settings file.
    env = {k: v for k, v in os.environ.items() if k.startswith("YIHAO_")}
    if args.config:
        env["YIHAO_CONFIG"] = str(Path(args.config).resolve())
    env["YIHAO_SECRET_KEY"] = settings.secret_key
    if settings.checkpoint_key_file:
        env["YIHAO_CHECKPOINT_KEY_FILE"] = str(settings.checkpoint_key_file.resolve())
    web_dir = Path(args.web_dir) if args.web_dir else settings.web_dir
    try:
        asyncio.run(
            serve_cluster(
                env, args.nodes, args.port, not args.no_nginx, web_dir, heal=not args.no_heal
            )
        )
    except ClusterError as exc:
        print(f"yihao: cluster: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yihao", description="Yihao (一号) server")
    parser.add_argument("--config", help="settings file (TOML); also YIHAO_CONFIG")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=int,
        help="processes sharing the port (default: YIHAO_WORKERS, else one per core with "
        "PostgreSQL and Redis; one in the embedded mode)",
    )
    # Set by the supervisor of `--workers N` for each worker it starts: INDEX:PIPE_FD.
    serve.add_argument("--worker", type=_worker_arg, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    commands.add_parser("migrate", help="bring the database to the latest schema").set_defaults(
        func=cmd_migrate
    )
    commands.add_parser("seed-demo", help="create the demo network").set_defaults(
        func=cmd_seed_demo
    )

    referrals = commands.add_parser("referrals", help="referrals").add_subparsers(
        dest="sub", required=True
    )
    referrals.add_parser(
        "expire", help="expire unanswered referrals now (safe to run from cron on any node)"
    ).set_defaults(func=cmd_referrals_expire)

    drugs = commands.add_parser("drugs", help="drug catalogue").add_subparsers(
        dest="sub", required=True
    )
    drugs_load = drugs.add_parser("load", help="replace the drug catalogue from a JSON file")
    drugs_load.add_argument("file", nargs="?", help="catalogue file (default: the demo one)")
    drugs_load.set_defaults(func=cmd_drugs_load)

    import_fhir = commands.add_parser(
        "import-fhir", help="import FHIR bundles (files or folders) as an institution's push"
    )
    import_fhir.add_argument("paths", nargs="+", metavar="PATH")
    import_fhir.add_argument("--institution", required=True, help="institution code")
    import_fhir.set_defaults(func=cmd_import_fhir)

    audit = commands.add_parser("audit", help="audit log").add_subparsers(dest="sub", required=True)
    audit_verify = audit.add_parser(
        "verify", help="check the hash chain and every signed checkpoint; exit 1 naming a change"
    )
    audit_verify.add_argument(
        "--expect-checkpoint",
        metavar="N:HASH",
        help="a checkpoint noted earlier (outside the database) that must still be there",
    )
    audit_verify.set_defaults(func=cmd_audit_verify)
    audit.add_parser(
        "checkpoint", help="sign the audit head now (as the periodic job does)"
    ).set_defaults(func=cmd_audit_checkpoint)
    keygen = audit.add_parser(
        "keygen", help="write a new checkpoint private key (PEM, 0600); prints the public key"
    )
    keygen.add_argument("file")
    keygen.set_defaults(func=cmd_audit_keygen, settings_free=True)
    commands.add_parser(
        "verify-signatures",
        help="check every signed prescription and consult opinion; exit 1 naming any changed",
    ).set_defaults(func=cmd_verify_signatures)

    payments = commands.add_parser("payments", help="payments").add_subparsers(
        dest="sub", required=True
    )
    reconcile = payments.add_parser(
        "reconcile",
        help="print a day's settlement per institution and every mismatch with the provider "
        "(exit 1 when there is one)",
    )
    reconcile.add_argument("--date", required=True, help="the local day, YYYY-MM-DD")
    reconcile.set_defaults(func=cmd_payments_reconcile)

    institution = commands.add_parser("institution", help="institutions").add_subparsers(
        dest="sub", required=True
    )
    inst_create = institution.add_parser("create", help="register an institution")
    inst_create.add_argument("--code", required=True)
    inst_create.add_argument("--name", required=True)
    inst_create.add_argument(
        "--kind", required=True, choices=["tertiary", "secondary", "community", "pharmacy", "lab"]
    )
    inst_create.add_argument("--region")
    inst_create.set_defaults(func=cmd_institution_create)

    user = commands.add_parser("user", help="accounts").add_subparsers(dest="sub", required=True)
    user_create = user.add_parser("create", help="create an account")
    user_create.add_argument("--username", required=True)
    user_create.add_argument("--password", required=True)
    user_create.add_argument(
        "--role",
        required=True,
        choices=["specialist", "gp", "pharmacist", "nurse", "institution_admin",
                 "platform_admin", "patient"],
    )  # fmt: skip
    user_create.add_argument("--institution", help="institution code (practitioners)")
    user_create.add_argument("--resident-id", help="resident ID number (patients)")
    user_create.add_argument("--name")
    user_create.add_argument("--title")
    user_create.add_argument("--department")
    user_create.set_defaults(func=cmd_user_create)
    user_totp = user.add_parser("totp", help="enrol a TOTP second factor for an account")
    user_totp.add_argument("--username", required=True)
    user_totp.set_defaults(func=cmd_user_totp)
    for name, help_text in (
        ("disable", "disable an account: its sessions end and its sockets close at once"),
        ("enable", "enable a disabled account"),
        ("unlock", "lift a lockout after failed sign-ins"),
    ):
        access = user.add_parser(name, help=help_text)
        access.add_argument("--username", required=True)
        access.set_defaults(func=cmd_user_access)

    cluster = commands.add_parser(
        "cluster", help="run N nodes behind nginx on this machine (PostgreSQL and Redis)"
    )
    cluster.add_argument("--nodes", type=int, default=2)
    cluster.add_argument("--port", type=int, default=8080, help="nginx's port")
    cluster.add_argument("--no-nginx", action="store_true", help="start the nodes only")
    cluster.add_argument("--web-dir", help="the built web client for nginx to serve")
    cluster.add_argument(
        "--no-heal",
        action="store_true",
        help="leave a node that dies down (by default it is started again under its id)",
    )
    cluster.set_defaults(func=cmd_cluster)

    recordings = commands.add_parser("recordings", help="consult recordings").add_subparsers(
        dest="sub", required=True
    )
    purge = recordings.add_parser(
        "purge", help="delete recordings older than the retention period (audited)"
    )
    purge.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    purge.set_defaults(func=cmd_recordings_purge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "settings_free", False):
        # Making the key a deployment needs before its settings can load.
        return int(args.func(args))
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"yihao: settings: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        return int(args.func(args, settings))
    except SettingsError as exc:  # found when the app is built (the triage's knowledge table)
        print(f"yihao: settings: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for err in field_errors(exc):
            print(f"yihao: {err['field'].replace('_', '-')}: {err['reason']}", file=sys.stderr)
        return 2
    except YihaoError as exc:
        print(f"yihao: {exc.detail}", file=sys.stderr)
        if exc.errors:
            print(json.dumps(exc.errors, ensure_ascii=False), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
