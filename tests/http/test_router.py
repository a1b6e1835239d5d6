"""The router tries a path only against the routes of its first two segments
(and the routes whose first segments are patterns): it must answer exactly
what trying every route in order answers."""

import re

import pytest

from billing import errors
from billing.web import http
from billing.web.routes import ROUTES

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def every_route(router, method, path):
    """The reference: every route in table order, as the router did before its index."""
    return answer_of(lambda: http.first_match(router.routes, method, path))


def answer(router, method, path):
    return answer_of(lambda: router.match(method, path))


def answer_of(match):
    try:
        return match()
    except errors.MethodNotAllowed as exc:
        return "405", exc.headers["Allow"]
    except errors.NotFound:
        return "404", None


def example_path(pattern):
    """A path the pattern matches: each named group replaced by a value it accepts."""
    def value(group):
        body = group.group(2)
        return "7" if body.startswith("\\d") else "app.js" if "." in body else "x1"
    path = re.sub(r"\(\?P<(\w+)>((?:\\.|[^)])*)\)", value, pattern)
    return path.replace("\\.", ".")


def paths():
    found = {example_path(pattern) for _method, pattern, *_rest in ROUTES}
    found |= {p + "/" for p in list(found)} | {p + "/extra" for p in list(found)}
    found |= {"/", "//v1/events", "/v1", "/v1/", "/v1/nothing", "/v1/invoicesXcsv", "/health/x", "/static/",
              "/V1/events", "/v1/events.csv", "/v1/invoices.csv/x"}
    return sorted(found)


@pytest.mark.parametrize("method", METHODS)
def test_the_indexed_router_answers_what_every_route_in_order_answers(method):
    router = http.Router(ROUTES)
    checked = 0
    for path in paths():
        assert answer(router, method, path) == every_route(router, method, path), (method, path)
        checked += 1
    assert checked > 200


def test_every_route_pattern_is_reached_by_its_example_path():
    router = http.Router(ROUTES)
    for method, pattern, *_rest in ROUTES:
        route, _params = router.match(method, example_path(pattern))
        assert route.pattern == pattern, (method, pattern)


def test_patterns_the_index_cannot_place_are_tried_for_every_path():
    """An optional slash or an alternation after plain segments could match
    paths of other first segments: such routes are tried everywhere."""
    def handler(request):
        return None

    routes = [("GET", r"/v1/a/?(?P<x>\w*)", handler, None), ("GET", r"/v1/b|/v2/c", handler, None),
              ("GET", r"/v1/d", handler, None), ("POST", r"/v1/d/(?P<n>\d+)", handler, None)]
    router = http.Router(routes)
    for path in ("/v1/a", "/v1/ax", "/v1/a/y", "/v1/b", "/v2/c", "/v1/d", "/v1/d/7", "/v1/d/x", "/v1/e", "/"):
        for method in ("GET", "POST", "HEAD"):
            assert answer(router, method, path) == every_route(router, method, path), (method, path)
