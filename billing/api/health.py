"""Health check (no auth)."""

from .. import __version__
from ..store import migrations


def health(request):
    app = request.app
    app.db.row("SELECT 1")
    with app.db.reader() as conn:
        version = migrations.current_version(conn)
    return {"status": "ok", "version": __version__, "schema_version": version}
