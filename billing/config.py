"""Configuration from the environment and the command line, in one object."""

import os
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


@dataclass
class Config:
    db_path: str = DEFAULT_DB
    data_dir: str = ""
    admin_key: str | None = None
    admin_password: str | None = None
    max_event_age_days: int = 90
    grace_period_hours: int = 24
    scheduler_interval: int = 60
    max_object_bytes: int = 100 * 1024 * 1024
    metrics_public: bool = False
    smtp: dict = field(default_factory=dict)
    log_requests: bool = True
    spike_min: Decimal = Decimal(10)  # a usage spike is at least this much (in the meter's unit)

    @classmethod
    def from_env(cls, env=None, db_path=None):
        env = os.environ if env is None else env
        db = db_path or env.get("BILLING_DB") or DEFAULT_DB
        config = cls(
            db_path=db,
            data_dir=env.get("BILLING_DATA_DIR") or os.path.dirname(os.path.abspath(db)),
            admin_key=env.get("BILLING_ADMIN_KEY") or None,
            admin_password=env.get("BILLING_ADMIN_PASSWORD") or None,
            max_event_age_days=_int_env(env, "BILLING_MAX_EVENT_AGE_DAYS", 90),
            grace_period_hours=_int_env(env, "BILLING_GRACE_PERIOD_HOURS", 24),
            scheduler_interval=_int_env(env, "BILLING_SCHEDULER_INTERVAL", 60, minimum=1),
            metrics_public=env.get("BILLING_METRICS_PUBLIC", "").strip().lower() in ("1", "true", "yes"),
            max_object_bytes=_int_env(env, "BILLING_MAX_OBJECT_BYTES", 100 * 1024 * 1024, minimum=1),
            spike_min=_decimal_env(env, "BILLING_SPIKE_MIN", Decimal(10)),
            smtp={k: env[k] for k in ("SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_PASSWORD",
                                      "SMTP_FROM") if env.get(k)},
        )
        return config

    @property
    def objects_dir(self):
        return os.path.join(self.data_dir, "objects")
