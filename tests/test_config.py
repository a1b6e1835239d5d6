"""Configuration read from the environment: values checked at start."""

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from billing.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_admin_key_is_refused():
    with pytest.raises(ConfigError, match="at least 32 characters"):
        Config.from_env({"BILLING_ADMIN_KEY": "mk_" + "a" * 28})
    assert Config.from_env({"BILLING_ADMIN_KEY": "mk_" + "a" * 29}).admin_key == "mk_" + "a" * 29


def test_the_server_does_not_start_with_a_short_admin_key(tmp_path):
    env = {"BILLING_DB": str(tmp_path / "b.db"), "BILLING_ADMIN_KEY": "short-key", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(ROOT / "server.py"), "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "BILLING_ADMIN_KEY must be at least 32 characters" in proc.stderr + proc.stdout
    assert not (tmp_path / "b.db").exists()


def test_trusted_proxies_are_addresses_or_networks():
    config = Config.from_env({"BILLING_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1,::1"})
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"),
                                      ipaddress.ip_network("::1/128"))
    assert Config.from_env({}).trusted_proxies == ()
    with pytest.raises(ConfigError, match="not an IP address"):
        Config.from_env({"BILLING_TRUSTED_PROXIES": "proxy.example.com"})


def test_rate_limit_and_smtp_tls():
    assert Config.from_env({}).rate_limit == 100
    assert Config.from_env({"BILLING_RATE_LIMIT": "5"}).rate_limit == 5
    for bad in ("0", "-1", "fast"):
        with pytest.raises(ConfigError):
            Config.from_env({"BILLING_RATE_LIMIT": bad})
    assert Config.from_env({}).smtp_tls is True
    assert Config.from_env({"SMTP_TLS": "off"}).smtp_tls is False
    with pytest.raises(ConfigError, match="SMTP_TLS"):
        Config.from_env({"SMTP_TLS": "maybe"})


def test_ingest_workers_are_off_unless_asked_for():
    assert Config.from_env({}).ingest_workers == 0  # §1: one process
    assert Config.from_env({"BILLING_INGEST_WORKERS": "2"}).ingest_workers == 2
    for bad in ("-1", "many"):
        with pytest.raises(ConfigError, match="BILLING_INGEST_WORKERS"):
            Config.from_env({"BILLING_INGEST_WORKERS": bad})


def test_a_config_made_in_code_keeps_its_files_beside_its_database(tmp_path):
    config = Config(db_path=str(tmp_path / "sub" / "billing.db"))
    assert config.data_dir == str(tmp_path / "sub")
    assert config.master_key_path == str(tmp_path / "sub" / "master.key")
    assert Config(db_path=str(tmp_path / "x.db"), data_dir=str(tmp_path / "elsewhere")).data_dir == str(tmp_path / "elsewhere")
