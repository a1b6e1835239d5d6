"""A real clickhouse-server for the tests (and to try the ClickHouse path by
hand): a minimal config.xml and users.xml in a folder that also holds its
data and logs, listening on 127.0.0.1 only.

    python3 -m tests.clickhouse.server DIR [HTTP_PORT]

starts one in the foreground (Ctrl-C stops it) and prints the
BILLING_CLICKHOUSE_URL to use.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEBIAN_PATH = "/usr/sbin/clickhouse-server"  # not on a normal user's PATH

CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{dir}/log/server.log</log><errorlog>{dir}/log/error.log</errorlog>
    <console>0</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
</yandex>
"""
USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"""


def binary():
    """The clickhouse-server program, or None."""
    found = shutil.which("clickhouse-server")
    if found:
        return found
    return DEBIAN_PATH if os.access(DEBIAN_PATH, os.X_OK) else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClickHouseServer:
    """clickhouse-server with its config, data and logs under `folder`."""

    def __init__(self, folder, http_port=None, program=None):
        self.folder = os.path.abspath(folder)
        self.program = program or binary()
        self.http_port = http_port or free_port()
        self.tcp_port = free_port()
        self.process = None
        os.makedirs(os.path.join(self.folder, "log"), exist_ok=True)
        with open(os.path.join(self.folder, "config.xml"), "w") as out:
            out.write(CONFIG.format(dir=self.folder, http_port=self.http_port, tcp_port=self.tcp_port))
        with open(os.path.join(self.folder, "users.xml"), "w") as out:
            out.write(USERS)

    def url(self, database="meterline"):
        return f"http://127.0.0.1:{self.http_port}/?database={database}"

    def start(self, wait=30.0):
        self.process = subprocess.Popen([self.program, f"--config-file={self.folder}/config.xml"],
                                        cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited ({self.process.returncode}); see {self.folder}/log")
            try:
                if self.query("SELECT 1", timeout=1).strip() == "1":
                    return self
            except OSError:
                time.sleep(0.05)  # polling for the port: the server takes about two seconds to start
        self.stop()
        raise RuntimeError(f"clickhouse-server did not answer within {wait} s; see {self.folder}/log")

    def query(self, sql, timeout=10):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/", data=sql.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.read().decode()

    def stop(self):
        """Terminate (SIGTERM) and wait; the data stays for a restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    if binary() is None:
        sys.exit("clickhouse-server is not installed (apt-get install clickhouse-server)")
    server = ClickHouseServer(argv[1], int(argv[2]) if len(argv) == 3 else 8123).start()
    print(f"clickhouse-server on 127.0.0.1:{server.http_port}, data in {server.folder}")
    print(f"BILLING_CLICKHOUSE_URL={server.url()}", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main(sys.argv)
