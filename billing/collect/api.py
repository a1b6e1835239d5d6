"""Talking to the Meterline server: requests, the check before collecting, --setup."""

import http.client
import urllib.error
import urllib.request

from .answers import error_text, missing_meters_message
from .constants import (EVENT_ROLES, EXIT_FAILED, EXIT_OK, EXIT_USAGE, GROUP_BY, HTTP_TIMEOUT, METERS, METRICS,
                        PROG)
from .quantities import decode_json, encode_json


class Unreachable(Exception):
    pass


class Api:
    def __init__(self, url, key, timeout=HTTP_TIMEOUT):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(self, method, path, body=None, timeout=None):
        """(status, parsed JSON body or None); raises Unreachable when no HTTP answer came."""
        data = encode_json(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, self._json(response.read())
        except urllib.error.HTTPError as exc:
            try:
                payload = exc.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            return exc.code, self._json(payload)
        except urllib.error.URLError as exc:
            raise Unreachable(str(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from None

    @staticmethod
    def _json(payload):
        try:
            return decode_json(payload) if payload else None
        except ValueError:
            return None


class Fatal(Exception):
    """Stop with this message (exit 2): bad key, missing meters, unknown customer."""


def check_server(api, customer):
    """Before collecting: the key works and may post events, the customer and
    the five meters exist. Raises Fatal or Unreachable."""
    status, body = api.request("GET", "/v1/auth/me")
    if status == 401:
        raise Fatal(f"the server refused the API key ({error_text(status, body)}); check --key")
    if status != 200:
        raise Fatal(f"cannot check the API key: {error_text(status, body)}")
    role = (body or {}).get("role")
    if role not in EVENT_ROLES:
        raise Fatal(f"this API key (role {role}) may not post events; use an ingest, admin or customer key")
    if role == "customer" and isinstance(customer, int) and body.get("customer_id") != customer:
        raise Fatal(f"this API key belongs to customer {body.get('customer_id')}, not {customer}")
    if role == "ingest":
        return  # may not read meters: a missing meter shows in the first batch answer instead
    if isinstance(customer, int):
        status, body = api.request("GET", f"/v1/customers/{customer}")
        if status == 404:
            raise Fatal(f"customer {customer} does not exist on {api.url}")
        if status == 200 and (body or {}).get("archived"):
            raise Fatal(f"customer {customer} is archived; it cannot receive events")
    missing = []
    for key in METRICS:
        status, body = api.request("GET", f"/v1/meters/{key}")
        if status == 404:
            missing.append(key)
        elif status != 200:
            raise Fatal(f"cannot read meter {key}: {error_text(status, body)}")
    if missing:
        raise Fatal(missing_meters_message(missing, api.url))


def run_setup(api, out, err):
    """--setup: create the missing meters (sum, grouped by service and host)."""
    created = 0
    try:
        for key in METRICS:
            name, unit = METERS[key]
            status, body = api.request("GET", f"/v1/meters/{key}")
            if status == 401:
                print(f"{PROG}: the server refused the API key ({error_text(status, body)}); check --key",
                      file=err)
                return EXIT_USAGE
            if status == 403:
                print(f"{PROG}: --setup needs an admin API key ({error_text(status, body)})", file=err)
                return EXIT_USAGE
            if status == 200:
                message = f"meter {key}: exists"
                if body.get("aggregation") != "sum":
                    print(f"{PROG}: WARNING: meter {key} aggregates with {body.get('aggregation')!r}, not 'sum';"
                          " the collector's events need 'sum'", file=err)
                wanted = list(body.get("group_by") or [])
                added = [g for g in GROUP_BY if g not in wanted]
                if added:
                    status, body = api.request("PATCH", f"/v1/meters/{key}", {"group_by": wanted + added})
                    if status != 200:
                        print(f"{PROG}: cannot add group_by {added} to meter {key}: {error_text(status, body)}",
                              file=err)
                        return EXIT_FAILED
                    message += f" (added group_by {', '.join(added)})"
                print(message, file=out, flush=True)
                continue
            if status != 404:
                print(f"{PROG}: cannot read meter {key}: {error_text(status, body)}", file=err)
                return EXIT_FAILED
            status, body = api.request("POST", "/v1/meters", {"key": key, "name": name, "unit": unit,
                                                              "aggregation": "sum", "group_by": GROUP_BY})
            if status == 201:
                created += 1
                print(f"meter {key}: created ({unit}, sum, grouped by {', '.join(GROUP_BY)})", file=out, flush=True)
            elif status == 409:
                print(f"meter {key}: exists", file=out, flush=True)
            elif status == 403:
                print(f"{PROG}: --setup needs an admin API key ({error_text(status, body)})", file=err)
                return EXIT_USAGE
            else:
                print(f"{PROG}: cannot create meter {key}: {error_text(status, body)}", file=err)
                return EXIT_FAILED
    except Unreachable as exc:
        print(f"{PROG}: cannot reach {api.url}: {exc}", file=err)
        return EXIT_FAILED
    print(f"setup done: {created} meter{'s' if created != 1 else ''} created, {len(METRICS) - created} already there",
          file=out, flush=True)
    return EXIT_OK
