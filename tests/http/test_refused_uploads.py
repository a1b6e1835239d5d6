"""A refused upload is answered and its body read to the end even when the
client asked to close the connection (urllib sends `Connection: close`), so
the client, still sending, reads the 409 instead of a broken pipe."""

import json
import urllib.error
import urllib.request

from tests.harness import ADMIN_KEY
from tests.http.helpers import create_customer


def test_refused_uploads_with_connection_close_are_answered(server, admin):
    customer = create_customer(admin, storage_quota_bytes=1_000_000)
    body = b"x" * 2_000_000
    for _ in range(80):
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/v1/objects/too-big.bin?customer_id={customer['id']}", data=body,
            method="PUT", headers={"Authorization": f"Bearer {ADMIN_KEY}", "Connection": "close"})
        try:
            urllib.request.urlopen(request, timeout=30)
            raise AssertionError("the upload was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 409 and json.loads(exc.read())["error"]["code"] == "quota_exceeded"
    assert admin.get(f"/v1/objects?customer_id={customer['id']}").json["total_bytes"] == 0
