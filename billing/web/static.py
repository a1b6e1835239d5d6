"""The dashboard's files, served from static/ (no build step)."""

import mimetypes
import os

from ..errors import NotFound
from ..api.responses import Response

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "static")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json; charset=utf-8", ".png": "image/png", ".ico": "image/x-icon"}


def _file(relative):
    root = os.path.realpath(STATIC_DIR)
    path = os.path.realpath(os.path.join(root, relative))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise NotFound("No such file.")
    extension = os.path.splitext(path)[1].lower()
    content_type = TYPES.get(extension) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    with open(path, "rb") as handle:
        body = handle.read()
    return Response(200, body, content_type, headers={"Cache-Control": "no-cache"})


def index(request):
    return _file("index.html")


def asset(request, path):
    return _file(path)
