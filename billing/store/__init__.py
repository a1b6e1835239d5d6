"""SQLite only: connections, the one writer path, migrations."""
