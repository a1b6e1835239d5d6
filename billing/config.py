"""Configuration from the environment and the command line, in one object."""

import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

DEFAULT_DB = os.path.join("data", "billing.db")


class ConfigError(ValueError):
    pass


def _int_env(env, name, default, minimum=0):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _decimal_env(env, name, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{name} must be a number at least 0")
    return value


MIN_ADMIN_KEY = 32  # characters of BILLING_ADMIN_KEY at least


def _proxies_env(env, name):
    """BILLING_TRUSTED_PROXIES: addresses or networks, separated by commas."""
    raw = env.get(name) or ""
    networks = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IP address or network") from None
    return tuple(networks)


def _admin_key_env(env):
    key = env.get("BILLING_ADMIN_KEY") or None
    if key is not None and len(key) < MIN_ADMIN_KEY:
        raise ConfigError(f"BILLING_ADMIN_KEY must be at least {MIN_ADMIN_KEY} characters "
                          f"(got {len(key)}); a short key can be guessed")
    return key


def _smtp_tls_env(env):
    raw = (env.get("SMTP_TLS") or "").strip().lower()
    if raw in ("", "on", "true", "1", "yes", "starttls"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"SMTP_TLS must be 'on' or 'off', got {raw!r}")


def _clickhouse_env(env):
    """BILLING_CLICKHOUSE_URL: ClickHouse's HTTP interface, e.g.
    http://127.0.0.1:8123/?database=meterline (unset: no ClickHouse)."""
    raw = (env.get("BILLING_CLICKHOUSE_URL") or "").strip()
    if not raw:
        return None
    try:
        parts = urllib.parse.urlsplit(raw)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"BILLING_CLICKHOUSE_URL must be an http:// or https:// URL of ClickHouse's HTTP "
                          f"interface (like http://127.0.0.1:8123/?database=meterline), got {raw!r}")
    database = urllib.parse.parse_qs(parts.query).get("database", ["default"])[-1]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ConfigError(f"BILLING_CLICKHOUSE_URL: the database must be a plain name (letters, digits, _), "
                          f"got {database!r}")
    return raw


@dataclass
class Config:
    db_path: str = DEFAULT_DB
    data_dir: str = ""
    admin_key: str | None = None
    admin_password: str | None = None
    max_event_age_days: int = 90
    event_retention_days: int | None = None  # raw events of invoiced periods older than this are archived; None: off
    grace_period_hours: int = 24
    scheduler_interval: int = 60
    max_object_bytes: int = 100 * 1024 * 1024
    metrics_public: bool = False
    smtp: dict = field(default_factory=dict)
    log_requests: bool = True
    spike_min: Decimal = Decimal(10)  # a usage spike is at least this much (in the meter's unit)
    rate_limit: int = 100  # requests per second of each customer credential (bursts of twice that)
    trusted_proxies: tuple = ()  # ip_network objects whose X-Forwarded-For is believed
    smtp_tls: bool = True  # STARTTLS required and the certificate verified (SMTP_TLS=off: plain)
    clickhouse_url: str | None = None  # events shipped there, usage and event search read there
    ingest_workers: int = 0  # processes validating large batches (billing/api/ingest_pool.py); 0: none (§1: one process)

    def __post_init__(self):
        if not self.data_dir:  # the master key, objects and archive files live beside the database
            self.data_dir = os.path.dirname(os.path.abspath(self.db_path))

    @classmethod
    def from_env(cls, env=None, db_path=None):
        env = os.environ if env is None else env
        db = db_path or env.get("BILLING_DB") or DEFAULT_DB
        config = cls(
            db_path=db,
            data_dir=env.get("BILLING_DATA_DIR") or os.path.dirname(os.path.abspath(db)),
            admin_key=_admin_key_env(env),
            admin_password=env.get("BILLING_ADMIN_PASSWORD") or None,
            max_event_age_days=_int_env(env, "BILLING_MAX_EVENT_AGE_DAYS", 90),
            event_retention_days=_int_env(env, "BILLING_EVENT_RETENTION_DAYS", None, minimum=1),
            grace_period_hours=_int_env(env, "BILLING_GRACE_PERIOD_HOURS", 24),
            scheduler_interval=_int_env(env, "BILLING_SCHEDULER_INTERVAL", 60, minimum=1),
            metrics_public=env.get("BILLING_METRICS_PUBLIC", "").strip().lower() in ("1", "true", "yes"),
            max_object_bytes=_int_env(env, "BILLING_MAX_OBJECT_BYTES", 100 * 1024 * 1024, minimum=1),
            spike_min=_decimal_env(env, "BILLING_SPIKE_MIN", Decimal(10)),
            rate_limit=_int_env(env, "BILLING_RATE_LIMIT", 100, minimum=1),
            trusted_proxies=_proxies_env(env, "BILLING_TRUSTED_PROXIES"),
            smtp_tls=_smtp_tls_env(env),
            clickhouse_url=_clickhouse_env(env),
            ingest_workers=_int_env(env, "BILLING_INGEST_WORKERS", 0),
            smtp={k: env[k] for k in ("SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_PASSWORD",
                                      "SMTP_FROM") if env.get(k)},
        )
        return config

    @property
    def master_key_path(self):
        """The file holding the key that wraps stored signing secrets (0600)."""
        return os.path.join(self.data_dir, "master.key")

    @property
    def archive_dir(self):
        """Where archived raw events go (billing/store/archive_files.py)."""
        return os.path.join(self.data_dir, "archive")

    @property
    def objects_dir(self):
        return os.path.join(self.data_dir, "objects")
