"""The real `python3 server.py` process: start-up, bootstrap, signals, durability."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(args, env_extra=None, cwd=ROOT):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(env_extra or {})
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(port),
                             "--no-scheduler", "--quiet", *args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on" in line:
            break
    if "listening on" not in "".join(lines):
        proc.kill()
        raise AssertionError("server did not start: " + "".join(lines) + proc.stderr.read())
    return proc, port, lines


def call(port, method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_first_start_creates_data_and_prints_credentials(tmp_path):
    # --db inside a folder that does not exist yet
    db = tmp_path / "fresh" / "nested" / "billing.db"
    proc, port, lines = start(["--db", str(db)])
    try:
        out = "".join(lines) + "".join(proc.stdout.readline() for _ in range(4))
        assert f"http://127.0.0.1:{port}/" in out
        assert "admin@localhost" in out
        password = out.split("admin password:")[1].split()[0]
        key = out.split("admin API key:")[1].split()[0]
        assert db.exists()
        status, body = call(port, "POST", "/v1/auth/login", {"email": "admin@localhost", "password": password})
        assert status == 200 and body["token"]
        assert call(port, "GET", "/v1/auth/me", token=key)[0] == 200
        # secrets are not stored in plain text
        raw = db.read_bytes() + (db.parent / "billing.db-wal").read_bytes()
        assert password.encode() not in raw and key.encode() not in raw
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    # a second start prints no credentials
    proc, port, lines = start(["--db", str(db)])
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "admin password" not in "".join(lines) + proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_environment_credentials_are_honoured(tmp_path):
    db = tmp_path / "billing.db"
    proc, port, lines = start([], {"BILLING_DB": str(db), "BILLING_ADMIN_KEY": "mk_env_key_0123456789abcdef0123456789",
                                   "BILLING_ADMIN_PASSWORD": "env-password-1"})
    try:
        assert db.exists()
        assert call(port, "GET", "/v1/auth/me", token="mk_env_key_0123456789abcdef0123456789")[0] == 200
        status, _ = call(port, "POST", "/v1/auth/login", {"email": "admin@localhost", "password": "env-password-1"})
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        output = proc.stdout.read()
        assert "env-password-1" not in output and "mk_env_key" not in output


def test_acknowledged_events_survive_kill_9(tmp_path):
    db = tmp_path / "billing.db"
    env = {"BILLING_DB": str(db), "BILLING_ADMIN_KEY": "mk_kill_key_0123456789abcdef0123456789", "BILLING_MAX_EVENT_AGE_DAYS": "0"}
    key = env["BILLING_ADMIN_KEY"]
    proc, port, _ = start([], env)
    try:
        assert call(port, "POST", "/v1/meters", {"key": "calls", "name": "Calls", "aggregation": "sum"}, key)[0] == 201
        assert call(port, "POST", "/v1/customers", {"name": "K", "email": "k@example.com"}, key)[0] == 201
        batch = {"customer_id": 1, "events": [{"id": f"b{i}", "meter": "calls", "quantity": 1} for i in range(500)]}
        assert call(port, "POST", "/v1/events/batch", batch, key) == (200, {"accepted": 500, "duplicates": 0})
        for i in range(20):
            assert call(port, "POST", "/v1/events", {"id": f"s{i}", "customer_id": 1, "meter": "calls"}, key)[0] == 201
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    proc, port, _ = start([], env)
    try:
        status, usage = call(port, "GET", "/v1/customers/1/usage", token=key)
        assert status == 200
        assert [u["value"] for u in usage["usage"] if u["meter"] == "calls"] == [520]
        # the ids are still known after the restart: resending changes nothing
        assert call(port, "POST", "/v1/events/batch", batch, key) == (200, {"accepted": 0, "duplicates": 500})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_port_in_use_exits_with_message(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(port),
                                 "--db", str(tmp_path / "b.db"), "--no-scheduler", "--quiet"],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "cannot listen" in result.stderr


def test_runtime_imports_only_the_standard_library():
    import ast
    std = set(sys.stdlib_module_names) | {"billing", "server", "__future__"}
    files = [os.path.join(ROOT, "server.py")]
    for folder, _, names in os.walk(os.path.join(ROOT, "billing")):
        files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    offenders = []
    for path in files:
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] not in std]
    assert offenders == []


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_the_server_tunes_the_cycle_collector_once_set_up():
    """server.tune_gc, which main calls before serving: start-up's objects
    frozen out of collections, the youngest generation collected less often."""
    import gc
    import importlib.util
    spec = importlib.util.spec_from_file_location("meterline_server", os.path.join(ROOT, "server.py"))
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    before = gc.get_threshold()
    try:
        server.tune_gc()
        assert gc.get_threshold() == server.GC_THRESHOLDS
        assert server.GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    import inspect
    main = inspect.getsource(server.main)
    assert main.index("tune_gc()") < main.index("serve_forever(")  # after set-up, before serving
