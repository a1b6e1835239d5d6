"""Test harness: a real server on a free port with a temporary database, and a
small HTTP client on http.client."""

import http.client
import json
import os
import threading
from decimal import Decimal

from billing import clock, jsonutil
from billing.app import App
from billing.config import Config
from billing.web.http import make_server

ADMIN_KEY = "mk_test_admin_key_0123456789abcdef"
ADMIN_PASSWORD = "admin-password-123"


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body
        ctype = headers.get("Content-Type", "")
        self.json = None
        if body and ctype.startswith("application/json"):
            self.json = json.loads(body, parse_float=Decimal)

    def __repr__(self):
        return f"<Reply {self.status} {self.raw[:300]!r}>"

    @property
    def error_code(self):
        return (self.json or {}).get("error", {}).get("code")


class Client:
    def __init__(self, port, token=None):
        self.port = port
        self.token = token
        self._conn = None

    def with_token(self, token):
        return Client(self.port, token)

    def _connection(self):
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self._conn

    def request(self, method, path, body=None, headers=None, raw=None, token=...):
        headers = dict(headers or {})
        token = self.token if token is ... else token
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        data = raw
        if body is not None:
            data = jsonutil.encode(body).encode()  # Decimals as exact JSON numbers
            headers.setdefault("Content-Type", "application/json")
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (ConnectionError, http.client.HTTPException):
            self.close()
            conn = self._connection()
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        reply = Reply(response.status, response.headers, payload)
        if response.headers.get("Connection", "").lower() == "close":
            self.close()
        return reply

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RunningServer:
    """App + HTTP server on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, db_path, env=None):
        # customer credentials are not rate-limited unless a test asks for it (BILLING_RATE_LIMIT)
        env = {"BILLING_ADMIN_KEY": ADMIN_KEY, "BILLING_ADMIN_PASSWORD": ADMIN_PASSWORD,
               "BILLING_RATE_LIMIT": "1000000", **(env or {})}
        config = Config.from_env(env, db_path=db_path)
        config.log_requests = False
        self.app = App(config)
        self.app.bootstrap()
        self.httpd = make_server(self.app, "127.0.0.1", 0)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.admin = Client(self.port, ADMIN_KEY)

    def client(self, token=None):
        return Client(self.port, token)

    def stop(self):
        self.admin.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.app.close()
        clock.pin(None)


def make_key(server, role=None, customer_id=None, name="test key"):
    body = {"name": name}
    if role:
        body["role"] = role
    if customer_id is not None:
        body["customer_id"] = customer_id
    reply = server.admin.post("/v1/api-keys", body)
    assert reply.status == 201, reply
    return reply.json["key"]


def temp_db(tmp_path):
    return os.path.join(str(tmp_path), "billing.db")
