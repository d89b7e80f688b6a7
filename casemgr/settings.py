"""Settings: one frozen object read from the environment.

Settings hold paths into the key ring, never key bytes, so printing them is safe.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_CHECKPOINT_SECONDS = 300
# Care programme: the smallest cell an aggregate report may ever show (SPEC §6).
MIN_REPORT_CELL = 5

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# -- operations (issue 11) -----------------------------------------------------------------
DEFAULT_TIMEZONE = "Asia/Shanghai"
LOG_FORMATS = ("text", "json")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"CASEMGR_TIMEZONE: {name!r} is not a known time zone") from exc


def _clock_minutes(text: str) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise ValueError
    return value


def parse_school_hours(raw: str) -> tuple[int, int]:
    """``07:00-19:00`` -> minutes after midnight (start, end); the end may be ``24:00``."""
    start, sep, end = raw.partition("-")
    try:
        if not sep:
            raise ValueError
        hours = (_clock_minutes(start), _clock_minutes(end))
    except ValueError:
        raise ValueError(f"CASEMGR_SCHOOL_HOURS must look like 07:00-19:00, got {raw!r}") from None
    if hours[0] >= hours[1]:
        raise ValueError("CASEMGR_SCHOOL_HOURS: the start must come before the end")
    return hours


def parse_school_days(raw: str) -> tuple[int, ...]:
    """``mon-fri`` or ``mon,tue,wed,thu,fri,sat`` -> weekday numbers (Monday 0)."""
    days: set[int] = set()
    for item in raw.lower().split(","):
        first, sep, last = item.strip().partition("-")
        try:
            begin = WEEKDAYS.index(first.strip())
            end = WEEKDAYS.index(last.strip()) if sep else begin
        except ValueError:
            raise ValueError(
                f"CASEMGR_SCHOOL_DAYS must name days like mon-fri or mon,wed,fri, got {raw!r}"
            ) from None
        if end < begin:
            raise ValueError(f"CASEMGR_SCHOOL_DAYS: {item.strip()!r} runs backwards")
        days.update(range(begin, end + 1))
    return tuple(sorted(days))


def parse_networks(raw: str, name: str = "CASEMGR_TRUSTED_PROXIES") -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR networks (``10.0.0.0/8, ::1``)."""
    networks = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{name}: {item!r} is not an address or a CIDR network") from exc
    return tuple(networks)


def normalise_database_url(url: str) -> str:
    """Accept URLs as people write them and choose the async driver ourselves.

    ``sqlite:///x.db`` -> ``sqlite+aiosqlite:///x.db``; ``postgresql://`` and ``postgres://``
    -> ``postgresql+asyncpg://``. A URL that already names an async driver is kept as is.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("database URL must look like sqlite:///path or postgresql://host/db")
    dialect, _, driver = scheme.partition("+")
    if dialect == "postgres":
        dialect = "postgresql"
    if dialect == "sqlite":
        if driver in ("", "pysqlite"):
            driver = "aiosqlite"
    elif dialect == "postgresql":
        if driver in ("", "psycopg2", "pg8000"):
            driver = "asyncpg"
    else:
        raise ValueError(f"unsupported database dialect {dialect!r}: use sqlite or postgresql")
    return f"{dialect}+{driver}://{rest}"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    keys_dir: Path
    var_dir: Path
    # Audit checkpoints are also written here, outside the database.
    checkpoint_file: Path
    token_ttl_seconds: int = 8 * 3600
    # A bearer token or UI session unused for this long ends (ASVS 3.3.2).
    token_idle_seconds: int = 30 * 60
    checkpoint_interval_seconds: int = 300
    # Where checkpoints also go, beyond the database's reach: syslog://host:port (UDP),
    # syslog+tcp://host:port, http(s):// (an append-only receiver). None: the file only.
    audit_anchor_url: str | None = None
    # Verification fails when an event older than this is covered by no checkpoint. None:
    # twice the checkpoint interval, or twice DEFAULT_CHECKPOINT_SECONDS when the service
    # does not seal by itself (interval 0; then seal from cron with `audit checkpoint`).
    audit_seal_deadline_seconds: int | None = None
    # Failures one (account, client) pair may have in a window before it gets 429.
    login_max_failures_per_pair: int = 5
    # Failures an account (a client) may have before further attempts wait growing delays.
    login_max_failures_per_account: int = 5
    login_max_failures_per_client: int = 20
    login_failure_window_seconds: int = 15 * 60
    login_delay_window_seconds: int = 24 * 3600
    login_delay_base_seconds: float = 1.0
    login_delay_max_seconds: float = 15 * 60
    # Argon2 hashes at once: one, so that hashing leaves the event loop a core (issue 10).
    password_hash_workers: int = 1
    # Proxies whose X-Forwarded-For names the client (empty: the socket peer is the client).
    # Typed loosely: handlers receive Settings through Litestar, whose signature model
    # cannot convert a union of two custom classes; the values are ``IPNetwork``s.
    trusted_proxies: tuple[Any, ...] = ()
    # -- care programme (issue 7) ---------------------------------------------------------
    # Aggregate reports show no count under this many students (SPEC §6); at least
    # MIN_REPORT_CELL, whatever the environment says.
    report_min_cell: int = 10
    # Retention per record kind (``casemgr retention run``): a student who left is erased
    # (crypto-shredded) this many whole years after the day they left.
    retention_left_student_years: int = 3
    # -- psychological screening (issue 8) ----------------------------------------------
    # A school's own instrument definitions (TOML, ``casemgr.screening.instruments``),
    # loaded at start-up beside the built-in ones. None: the built-in ones only.
    instruments_dir: Path | None = None
    # -- operations (issue 11): unusual access, logs, metrics, backups ---------------------
    # casemgr.audit.unusual: an account reading more distinct students' records than this
    # in one clock hour, or refused more often than this in one hour, is listed for review;
    # so is access to students' records outside school hours (minutes after midnight,
    # [start, end)) or on other days than the school days (0 = Monday), in ``timezone``.
    unusual_reads_per_hour: int = 50
    unusual_denials_per_hour: int = 10
    school_hours: tuple[int, int] = (7 * 60, 19 * 60)
    school_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    timezone: str = DEFAULT_TIMEZONE
    # casemgr.observability: "text" or "json" (one JSON object per line) on stderr.
    log_format: str = "text"
    # Who may read /metrics: clients in these networks (the client as casemgr.net resolves
    # it behind trusted proxies), or a request bearing the token kept in this file.
    metrics_allow: tuple[Any, ...] = ()
    metrics_token_file: Path | None = None
    # Erased students' destroyed data-key ids, appended before each erasure commits and
    # replayed by ``casemgr restore`` and ``casemgr init`` (casemgr.backup). None: none kept.
    shred_log_file: Path | None = None

    def __post_init__(self) -> None:
        if self.report_min_cell < MIN_REPORT_CELL:
            raise ValueError(f"CASEMGR_REPORT_MIN_CELL must be at least {MIN_REPORT_CELL}")
        if self.retention_left_student_years < 1:
            raise ValueError("CASEMGR_RETENTION_LEFT_STUDENT_YEARS must be at least 1")
        if self.unusual_reads_per_hour < 1 or self.unusual_denials_per_hour < 1:
            raise ValueError("CASEMGR_UNUSUAL_*_PER_HOUR must be at least 1")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"CASEMGR_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
        check_timezone(self.timezone)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        var_dir = Path(source.get("CASEMGR_VAR_DIR", "var"))
        raw_url = source.get("CASEMGR_DATABASE_URL") or f"sqlite:///{var_dir / 'casemgr.db'}"
        keys_dir = Path(source.get("CASEMGR_KEYS_DIR", "keys"))
        checkpoint_file = Path(
            source.get("CASEMGR_AUDIT_CHECKPOINT_FILE", str(var_dir / "audit-checkpoints.jsonl"))
        )

        def num(name: str, default: int) -> int:
            raw = source.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError as exc:
                raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc

        anchor_url = source.get("CASEMGR_AUDIT_ANCHOR_URL") or None
        if anchor_url is not None:
            from casemgr.audit.sink import check_anchor_url

            try:
                check_anchor_url(anchor_url)
            except ValueError as exc:
                raise ValueError(f"CASEMGR_AUDIT_ANCHOR_URL: {exc}") from exc
        seal_deadline = None
        if source.get("CASEMGR_AUDIT_SEAL_DEADLINE_SECONDS"):
            seal_deadline = num("CASEMGR_AUDIT_SEAL_DEADLINE_SECONDS", 0)
            if seal_deadline <= 0:
                raise ValueError("CASEMGR_AUDIT_SEAL_DEADLINE_SECONDS must be positive")
        return cls(
            database_url=normalise_database_url(raw_url),
            keys_dir=keys_dir,
            var_dir=var_dir,
            checkpoint_file=checkpoint_file,
            token_ttl_seconds=num("CASEMGR_TOKEN_TTL_SECONDS", 8 * 3600),
            token_idle_seconds=num("CASEMGR_TOKEN_IDLE_SECONDS", 30 * 60),
            checkpoint_interval_seconds=num(
                "CASEMGR_AUDIT_CHECKPOINT_SECONDS", DEFAULT_CHECKPOINT_SECONDS
            ),
            audit_anchor_url=anchor_url,
            audit_seal_deadline_seconds=seal_deadline,
            login_max_failures_per_pair=num("CASEMGR_LOGIN_MAX_FAILURES_PER_PAIR", 5),
            login_max_failures_per_account=num("CASEMGR_LOGIN_MAX_FAILURES_PER_ACCOUNT", 5),
            login_max_failures_per_client=num("CASEMGR_LOGIN_MAX_FAILURES_PER_CLIENT", 20),
            login_failure_window_seconds=num("CASEMGR_LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60),
            login_delay_max_seconds=num("CASEMGR_LOGIN_DELAY_MAX_SECONDS", 15 * 60),
            password_hash_workers=num("CASEMGR_PASSWORD_HASH_WORKERS", 1),
            trusted_proxies=parse_networks(source.get("CASEMGR_TRUSTED_PROXIES", "")),
            report_min_cell=num("CASEMGR_REPORT_MIN_CELL", 10),
            retention_left_student_years=num("CASEMGR_RETENTION_LEFT_STUDENT_YEARS", 3),
            instruments_dir=Path(
                source.get("CASEMGR_INSTRUMENTS_DIR") or str(var_dir / "instruments")
            ),
            # Operations (issue 11).
            unusual_reads_per_hour=num("CASEMGR_UNUSUAL_READS_PER_HOUR", 50),
            unusual_denials_per_hour=num("CASEMGR_UNUSUAL_DENIALS_PER_HOUR", 10),
            school_hours=parse_school_hours(source.get("CASEMGR_SCHOOL_HOURS") or "07:00-19:00"),
            school_days=parse_school_days(source.get("CASEMGR_SCHOOL_DAYS") or "mon-fri"),
            timezone=source.get("CASEMGR_TIMEZONE") or DEFAULT_TIMEZONE,
            log_format=(source.get("CASEMGR_LOG_FORMAT") or "text").lower(),
            metrics_allow=parse_networks(
                source.get("CASEMGR_METRICS_ALLOW", "127.0.0.1/32,::1/128"),
                "CASEMGR_METRICS_ALLOW",
            ),
            metrics_token_file=(
                Path(source["CASEMGR_METRICS_TOKEN_FILE"])
                if source.get("CASEMGR_METRICS_TOKEN_FILE")
                else None
            ),
            shred_log_file=Path(
                source.get("CASEMGR_SHRED_LOG_FILE") or str(var_dir / "shred-log.jsonl")
            ),
        )

    @property
    def seal_deadline(self) -> timedelta:
        """How old an event may grow before a missing checkpoint over it is a failure."""
        if self.audit_seal_deadline_seconds is not None:
            return timedelta(seconds=self.audit_seal_deadline_seconds)
        interval = self.checkpoint_interval_seconds or DEFAULT_CHECKPOINT_SECONDS
        return timedelta(seconds=2 * interval)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def __repr__(self) -> str:
        # Passwords in database URLs stay out of logs and tracebacks.
        from sqlalchemy.engine import make_url

        safe_url = make_url(self.database_url).render_as_string(hide_password=True)
        return f"Settings(database_url={safe_url!r}, keys_dir={str(self.keys_dir)!r})"
