"""What a handler returns: a Response (JSON, bytes or text), `created` for a
201, or a FileResponse that sends part of an open file. The web layer turns
them into HTTP; handlers in api build them."""

from .. import jsonutil

JSON_TYPE = "application/json; charset=utf-8"


class Response:
    def __init__(self, status=200, body=None, content_type=JSON_TYPE, headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = dict(headers or {})

    def payload(self):
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return jsonutil.encode(self.body).encode("utf-8")


def created(body):
    return Response(201, body)


class FileResponse(Response):
    """Bytes `offset … offset + length` of an open file, sent with
    Content-Length (zero-copy where the OS allows); the file is closed after."""

    def __init__(self, status, file, offset, length, content_type, headers=None):
        super().__init__(status, None, content_type, headers)
        self.file = file
        self.offset = offset
        self.length = length

    def close(self):
        self.file.close()
