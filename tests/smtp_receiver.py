"""A tiny SMTP receiver for the e-mail tests: just enough SMTP (EHLO, optional
STARTTLS, optional AUTH PLAIN, MAIL, RCPT, DATA with dot-unstuffing, RSET,
QUIT) to record what a client sends. `.commands` lists every command verb
received, `.tls_failures` the TLS handshakes that failed."""

import base64
import socketserver
import ssl
import threading


class SMTPHandler(socketserver.StreamRequestHandler):
    secure = False

    def reply(self, line):
        self.wfile.write(line.encode("ascii") + b"\r\n")

    def start_tls(self, state):
        try:
            self.connection = state.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            state.tls_failures.append(exc)
            return False
        self.secure = True
        self.rfile = self.connection.makefile("rb")
        self.wfile = self.connection.makefile("wb", buffering=0)
        return True

    def handle(self):
        state = self.server
        envelope = {"from": None, "rcpt": []}
        self.reply("220 test ESMTP")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("ascii").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            state.commands.append(verb)
            if verb in ("EHLO", "HELO"):
                extensions = (["STARTTLS"] if state.tls and not self.secure else []) + \
                    (["AUTH PLAIN"] if state.auth else [])
                self.reply("250-test" if extensions else "250 test")
                for index, extension in enumerate(extensions):
                    self.reply(("250 " if index == len(extensions) - 1 else "250-") + extension)
            elif verb == "STARTTLS" and state.tls and not self.secure:
                self.reply("220 go ahead")
                if not self.start_tls(state):
                    return
            elif verb == "AUTH" and state.auth and line.upper().startswith("AUTH PLAIN"):
                token = line.split(" ", 2)[2] if line.count(" ") >= 2 else None
                if token is None:
                    self.reply("334 ")
                    token = self.rfile.readline().decode("ascii").strip()
                _, user, password = base64.b64decode(token).decode("utf-8").split("\0")
                state.credentials.append((user, password))
                self.reply("235 ok")
            elif verb == "MAIL":
                envelope["from"] = line[len("MAIL FROM:"):].split(" ")[0].strip("<>")
                self.reply("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(line[len("RCPT TO:"):].split(" ")[0].strip("<>"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                body = []
                while True:
                    data_line = self.rfile.readline()
                    if data_line in (b".\r\n", b""):
                        break
                    body.append(data_line[1:] if data_line.startswith(b".") else data_line)
                state.messages.append(dict(envelope, data=b"".join(body)))
                envelope = {"from": None, "rcpt": []}
                self.reply("250 queued")
            elif verb == "RSET":
                envelope = {"from": None, "rcpt": []}
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class SMTPReceiver(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def start_receiver(port=0, auth=False, tls=None):
    """A receiver on 127.0.0.1 serving in a thread: `.messages` ({from, rcpt, data}),
    `.credentials` (user, password) when `auth` advertises AUTH PLAIN; `tls`
    (a server-side ssl.SSLContext) advertises STARTTLS."""
    server = SMTPReceiver(("127.0.0.1", port), SMTPHandler)
    server.auth, server.messages, server.credentials = auth, [], []
    server.tls, server.commands, server.tls_failures = tls, [], []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop_receiver(server):
    server.shutdown()
    server.server_close()
