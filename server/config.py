"""Settings: from environment variables (``YIHAO_<KEY>``) over an optional TOML file.

:class:`Settings` is a pydantic-settings ``BaseSettings``: its environment source reads
the ``YIHAO_`` variables (comma-separated lists for the list settings), so
``Settings()`` alone reads the process environment. :func:`load_settings` is how the
server starts: the file, then the environment, then explicit overrides, and a message
naming where a wrong value came from.

Every key is declared once in :class:`Settings`. A value that is missing or
wrong stops the server at start with a message naming the key and where it
came from (the environment variable or the file), never later mid-request.

TOML files may group keys in tables: ``[database] url = "…"`` is the key
``database_url``.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

ENV_PREFIX = "YIHAO_"

Role = Literal[
    "specialist", "gp", "pharmacist", "nurse", "institution_admin", "platform_admin", "patient"
]


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the key."""


class Settings(BaseSettings):
    # enable_decoding=False: list settings are comma separated in the environment, not JSON.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, enable_decoding=False
    )

    # Where the embedded mode keeps its SQLite file and recordings.
    data_dir: Path = Path("./data")
    # Empty: SQLite at <data_dir>/yihao.db. postgresql+asyncpg://… for the distributed mode.
    database_url: str = ""
    database_pool_size: int = Field(default=10, ge=1, le=200)
    # Empty: in-process Socket.IO manager. redis://… fans events out across processes.
    redis_url: str = ""
    # The Redis pub/sub channel the Socket.IO manager uses; nodes of one cluster share it.
    redis_channel: str = "yihao"
    # Apply migrations at start. Defaults to on in embedded mode only (see effective_auto_migrate).
    auto_migrate: bool | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # `yihao serve` processes sharing the port (SO_REUSEPORT, Linux), each a node of its own
    # fanning out through Redis (server/workers.py). 0: one per available core with
    # PostgreSQL and Redis, one in the embedded mode. More than one needs both.
    workers: int = Field(default=0, ge=0, le=256)
    # The event loop of `yihao serve`: uvloop where it is installed (auto), or asyncio's own.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # Public base URL, used in FHIR links; derived from host/port when empty.
    public_url: str = ""
    web_dir: Path | None = None

    # Secret for signing access tokens; every node of a cluster must share it.
    secret_key: str = ""
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86400)
    refresh_token_ttl_seconds: int = Field(default=7 * 86400, ge=300, le=90 * 86400)
    # Automatic logoff: a session idle this long is ended (0 disables).
    session_idle_timeout_seconds: int = Field(default=1800, ge=0)
    # A care relationship ends this many days after the institution's last encounter with
    # the patient (presence at the desk, the patient's approval, a booked visit, a referral).
    care_relationship_days: int = Field(default=365, ge=1, le=3650)
    # How long a presence code from the patient's app is good for, and a link request waits.
    presence_code_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    care_request_ttl_hours: int = Field(default=72, ge=1, le=720)
    # How often idle sessions are swept (and their sockets closed), and how often an open
    # socket re-reads its session from the database in case a revocation broadcast was lost.
    session_check_seconds: int = Field(default=30, ge=1, le=3600)
    # How long a node answers REST's session check from memory after reading the session
    # (server/core/sessions.py SessionCache): an ending announced on the cluster channel
    # drops it at once; this bounds a lost broadcast or a row changed by other means (0: off).
    session_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    login_max_failures: int = Field(default=5, ge=1, le=100)
    login_lockout_seconds: int = Field(default=900, ge=1)
    # Login attempts allowed per client address per minute.
    login_rate_per_minute: int = Field(default=30, ge=1)
    # Roles that must present a TOTP code at login.
    totp_required_roles: frozenset[Role] = frozenset()
    # argon2id cost; the defaults follow RFC 9106's second recommended option.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    # Threads that hash and verify passwords, off the event loop (argon2 releases the GIL);
    # more logins at once than this wait for a thread, each needing argon2_memory_kib.
    password_workers: int = Field(default=2, ge=1, le=64)
    # Audit checkpoints (server/core/checkpoints.py): the Ed25519 private key (PEM) that signs
    # them, kept outside the database so an insider with database access cannot re-sign a
    # rewritten audit chain or a swapped practitioner key. Embedded mode: generated into
    # <data_dir>/checkpoint_key on first start; PostgreSQL: required. `yihao audit keygen`
    # makes one.
    checkpoint_key_file: Path | None = None
    # The public half, for verifying; derived from checkpoint_key_file when empty. An
    # auditor sets only this one to run `yihao audit verify` without the signing key.
    checkpoint_public_key_file: Path | None = None
    # How often one node of the cluster checkpoints the audit head (0: never; a cron then
    # runs `yihao audit checkpoint`).
    checkpoint_interval_seconds: int = Field(default=60, ge=0)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    fhir_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # JSON nesting allowed in a body (/api) or a socket payload, checked before decoding:
    # the decoder and the validators recurse once a level (server/core/jsonlimits.py).
    json_max_depth: int = Field(default=64, ge=8, le=200)
    # FHIR resources nest deeper (extensions in extensions, Questionnaire items; Synthea
    # bundles: 11); validation costs several stack frames a level, so 300 is the ceiling.
    fhir_json_max_depth: int = Field(default=100, ge=16, le=300)
    # Socket.IO: events a connection may send per 10 s before it is told to slow down.
    socket_events_per_10s: int = Field(default=300, ge=1)
    socket_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # How often a node compares what it pushed to its sockets with the streams' heads in the
    # database, and sends `heads` to a room whose push went missing (server/realtime/heads.py).
    socket_heads_seconds: float = Field(default=1.0, gt=0, le=3600)
    # Accept per-message deflate on Socket.IO websockets (off, as Node's Socket.IO 4: a zlib
    # context per connection is most of its memory; worth it only for large, compressible events).
    socket_compression: bool = False

    # Scheduling: weekly templates are in this local time zone (slots are stored in UTC).
    schedule_timezone: str = "Asia/Shanghai"
    # Booking (预约挂号). Reminders go this many hours before an appointment; a patient with
    # the limit of no-shows at an institution within the days may not book there; an
    # institution without a policy lets patients cancel until the cut-off hours before.
    # The reminder and no-show jobs look every interval (0: no jobs, e.g. a cron runs them).
    booking_reminder_hours: float = Field(default=24, gt=0, le=24 * 14)
    booking_no_show_limit: int = Field(default=3, ge=1, le=100)
    booking_no_show_days: int = Field(default=90, ge=1, le=3650)
    booking_cancel_cutoff_hours: int = Field(default=2, ge=0, le=24 * 14)
    booking_job_interval_seconds: int = Field(default=300, ge=0)
    # Idempotency keys (a write retried with the same Idempotency-Key is done once) are kept
    # this long; the purge job looks every interval (0: no job, e.g. a cron runs it).
    idempotency_keep_hours: float = Field(default=24, gt=0, le=24 * 30)
    idempotency_purge_interval_seconds: int = Field(default=3600, ge=0)
    # A repeat that its operation refuses (e.g. "already accepted") hears the stored answer
    # only this long after the first request (a client's retries); later, the refusal.
    idempotency_replay_seconds: float = Field(default=60, gt=0, le=24 * 3600)
    # Referrals: an unanswered (requested) referral expires after this many hours.
    referral_expiry_hours: float = Field(default=72, gt=0)
    # How often the background job looks for referrals to expire (0: never, e.g. a cron runs it).
    referral_expiry_interval_seconds: int = Field(default=300, ge=0)
    # Remote consultations. Unanswered requests are escalated to the invited institution's
    # administrators after this long; the escalation job looks every interval (0: no job).
    consult_answer_timeout_seconds: int = Field(default=4 * 3600, ge=60)
    consult_escalation_interval_seconds: int = Field(default=60, ge=0)
    # Joining a live session needs a password/TOTP re-check, or a login younger than this.
    consult_reauth_seconds: int = Field(default=300, ge=0)
    consult_max_participants: int = Field(default=4, ge=2, le=10)
    # Follow-up video visits: the doctor opens the room with a login younger than this,
    # or with the password / a TOTP code (互联网诊疗管理办法: authenticated before the visit).
    visit_doctor_auth_minutes: int = Field(default=30, ge=0, le=24 * 60)
    # The patient is reminded (inbox ``visit_reminder``) this many minutes before an accepted
    # visit's time, once; the job ``visits.reminders`` runs this often (0: never).
    visit_reminder_minutes: int = Field(default=30, ge=1, le=24 * 60)
    visit_job_interval_seconds: float = Field(default=60, ge=0)
    # WebRTC: STUN/TURN URLs handed to clients (comma separated in the environment), and the
    # coturn REST-API shared secret (static-auth-secret) for short-lived TURN credentials.
    ice_servers: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_credential_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    # Pre-call check peers (server/media/precall.py): each decodes and re-encodes the
    # caller's video — about half a core at 640×480 (bench/media_precall.py) — so they are
    # bounded per process, and each lives this long at most.
    precall_max_peers: int = Field(default=4, ge=0, le=500)
    precall_max_seconds: int = Field(default=120, ge=10, le=3600)
    # Consult recording (server/media/recording.py): each recording is a worker process that
    # decodes every participant's video and encodes one composed WebM (VP8/Opus), about a
    # third of a core (bench/media_recording.py), so they are bounded per process.
    # Empty recordings_dir: <data_dir>/recordings.
    recordings_dir: Path | None = None
    # Recordings older than this are deleted by `yihao recordings purge` (3 years).
    recording_retention_days: int = Field(default=1095, ge=1)
    recording_max_concurrent: int = Field(default=2, ge=0, le=100)
    # A recording stops on its own after this long, or when no person has been in the
    # session for recording_idle_seconds.
    recording_max_seconds: int = Field(default=4 * 3600, ge=10)
    recording_idle_seconds: int = Field(default=300, ge=1)
    # A recording does not start with less free space than this in recordings_dir.
    recording_min_free_mb: int = Field(default=512, ge=0)
    # The largest recording file (0: no limit); a recording that reaches it fails, like on a
    # full disk. 640×480 at the default rates is about 300 MB an hour.
    recording_max_bytes: int = Field(default=4 * 1024**3, ge=0)
    # The composed picture: a grid of the participants' video.
    recording_width: int = Field(default=640, ge=160, le=1920)
    recording_height: int = Field(default=480, ge=120, le=1080)
    recording_fps: int = Field(default=15, ge=1, le=30)
    # The workers' scheduling priority (nice): under a full CPU the server's event loop goes
    # first and a worker skips pictures instead (0: the same priority as the server).
    recording_worker_nice: int = Field(default=10, ge=0, le=19)
    # Where the worker connects to this server (Socket.IO); empty: the local address the
    # host's socket came in on.
    recording_server_url: str = ""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Browser origins allowed to call the API and Socket.IO; empty means same origin only.
    cors_origins: tuple[str, ...] = ()
    # Prescriptions: how often expiry is swept and unacknowledged deliveries re-pushed (0: never).
    prescription_sweep_seconds: float = Field(default=30.0, ge=0)
    # Cluster: this node's id (empty: host:pid:random, new at every start; set a stable one,
    # e.g. the pod or unit name, so a restarted node clears what its killed self left), how
    # often it beats, and after how long without a beat it is dead (its presence is reaped).
    node_id: str = Field(default="", max_length=100)
    node_heartbeat_seconds: float = Field(default=5.0, gt=0)
    node_dead_after_seconds: float = Field(default=20.0, gt=0)
    # FHIR ingest (POST /fhir): bundles one institution may push per minute (cluster-wide with
    # Redis), so one institution's bulk load cannot starve the others (429 with Retry-After).
    fhir_ingest_per_minute: int = Field(default=120, ge=1)
    # Authenticated /api and /fhir requests one account may make per minute, cluster-wide (bursts
    # up to the same number): a flooding client gets 429s instead of starving the others.
    api_requests_per_minute: int = Field(default=3000, ge=1)
    # Patient messages outside the app (server/inbox/outbound.py): the channels each patient
    # notification is sent on (log: a log line, the demo's; sms, wechat: HTTP gateways),
    # the gateways' URLs (required for their channel), how often the dispatch job sends what
    # is due (0: no job), the tries per message, the first retry's delay (doubled each try,
    # at most 10 minutes), and a gateway's answer timeout.
    notify_channels: tuple[Literal["log", "sms", "wechat"], ...] = ("log",)
    notify_sms_url: str = ""
    notify_wechat_url: str = ""
    notify_dispatch_seconds: float = Field(default=2.0, ge=0)
    notify_max_attempts: int = Field(default=5, ge=1, le=50)
    notify_retry_seconds: float = Field(default=5.0, gt=0, le=3600)
    notify_send_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Payments (server/payments, docs/payments.md). The built-in sandbox provider: off unless
    # asked for (`make demo` and the tests turn it on), since with it a patient "pays" without
    # paying; the key it signs its notifications with (empty: derived from secret_key), and how
    # long after "charging" it sends the asynchronous notification.
    payments_sandbox: bool = False
    payments_sandbox_key: str = ""
    payments_sandbox_notify_delay_seconds: float = Field(default=0.2, ge=0, le=3600)
    # A notification whose signed timestamp is further than this from now is refused.
    payments_notify_max_skew_seconds: int = Field(default=300, ge=10, le=86400)
    # Refused notifications one address may send per minute before it hears 429 (unaudited):
    # the route takes no account, so a flood of forged ones must not write audit rows.
    payments_notify_refusals_per_minute: int = Field(default=60, ge=1)
    # The reconciliation job (payments.reconcile_pending): how often it runs (0: no job), and
    # how old an order still `created` (or a refund still `refunding`) must be before the
    # provider is asked; an order left unpaid this long is closed.
    payments_reconcile_interval_seconds: float = Field(default=30, ge=0)
    payments_pending_seconds: float = Field(default=60, ge=0)
    payments_order_ttl_seconds: int = Field(default=1800, ge=60)

    # Triage (智能导诊): a knowledge table of the deployment's own instead of the shipped one
    # (server/triage/data/knowledge.yaml; the format is in docs/triage.md). Checked at start.
    triage_knowledge_path: Path | None = None

    @field_validator(
        "totp_required_roles", "ice_servers", "cors_origins", "notify_channels", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("ice_servers")
    @classmethod
    def _check_ice_servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"'{url}' must start with stun:, stuns:, turn: or turns:")
        return value

    @field_validator("notify_channels")
    @classmethod
    def _check_notify_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("names a channel twice")
        return value

    @field_validator("secret_key")
    @classmethod
    def _check_secret(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'yihao.db'}"

    @property
    def effective_recordings_dir(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def with_overrides(self, **values: Any) -> Settings:
        return self.model_validate({**self.model_dump(), **values})


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._given = {name.lower(): value for name, value in environ.items()}
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def load_settings(
    path: str | Path | None = None,
    environ: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the file (if any), then the environment, then explicit overrides."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = path or environ.get(f"{ENV_PREFIX}CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                from_file = _flatten(tomllib.load(fh))
        except OSError as exc:
            raise SettingsError(f"{ENV_PREFIX}CONFIG: cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
        for key, value in from_file.items():
            values[key] = value
            origin[key] = f"'{key}' in {path}"
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        if name.startswith(f"{ENV_PREFIX}TEST_"):
            # Reserved for the test suite (YIHAO_TEST_DATABASE_URL, …), never a server setting.
            continue
        if name[len(ENV_PREFIX) :].lower() not in Settings.model_fields:
            # A mistyped variable would otherwise be silently ignored.
            raise SettingsError(f"{name}: unknown setting")
    ours = {name: raw for name, raw in environ.items() if name.startswith(ENV_PREFIX)}
    for key, value in _Environ(ours)().items():
        values[key] = value
        origin[key] = f"{ENV_PREFIX}{key.upper()}"
    for key, value in overrides.items():
        values[key] = value
        origin[key] = key
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "?"
            where = origin.get(key, f"{ENV_PREFIX}{key.upper()}")
            problems.append(f"{where}: {err['msg']}")
        raise SettingsError("; ".join(problems)) from None
    if not settings.secret_key:
        settings = settings.with_overrides(secret_key=_local_secret(settings))
    return _check_checkpoint_keys(settings, origin)


def _local_secret(settings: Settings) -> str:
    """A secret kept in the data directory, for a single-node install.

    A cluster must set YIHAO_SECRET_KEY explicitly: nodes would otherwise each
    invent their own and refuse one another's tokens.
    """
    if not settings.is_sqlite:
        raise SettingsError(f"{ENV_PREFIX}SECRET_KEY: required when the database is PostgreSQL")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret_file = settings.data_dir / "secret_key"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
        secret_file.chmod(0o600)
    return secret_file.read_text().strip()


def _check_checkpoint_keys(settings: Settings, origin: dict[str, str]) -> Settings:
    """Fail at start on a missing or unreadable checkpoint key, naming the setting.

    Like the secret, the embedded mode makes its own key; a cluster must be given one
    (every node signs with the same key, and it must not live in the database).
    """
    from server.core.checkpoints import KeyFileError, ensure_key_file, load_key_files

    private, public = settings.checkpoint_key_file, settings.checkpoint_public_key_file
    if private is None and public is None:
        if not settings.is_sqlite:
            raise SettingsError(
                f"{ENV_PREFIX}CHECKPOINT_KEY_FILE: required when the database is PostgreSQL "
                "(an Ed25519 private key in PEM, kept outside the database; "
                "`yihao audit keygen FILE` makes one)"
            )
        private = ensure_key_file(settings.data_dir / "checkpoint_key")
        settings = settings.with_overrides(checkpoint_key_file=private)
    try:
        load_key_files(private, public)
    except KeyFileError as exc:
        key = "checkpoint_public_key_file" if exc.public else "checkpoint_key_file"
        raise SettingsError(f"{origin.get(key, f'{ENV_PREFIX}{key.upper()}')}: {exc}") from None
    return settings
