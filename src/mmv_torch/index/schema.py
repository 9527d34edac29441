"""The SQLite schema of an index's ``meta.sqlite`` and its migrations.

Tables: ``info`` (settings, JSON values), ``roots`` (the folders whose files may be served), ``files``
(path, size, mtime, duration, has-audio, status ``done`` or ``bad`` with the reason) and ``windows``
(file, start, end, has-audio, a small JPEG thumbnail, has-video). Columns added after the first release
are added to an older index by :func:`migrate` with a default that keeps its meaning (an index built
before ``has_video`` has video in every window), so an older index opens unchanged; a reader, which
never writes, asks :func:`has_column` and reads the default instead.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS files (
  id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, root INTEGER NOT NULL, size INTEGER NOT NULL,
  mtime REAL NOT NULL, duration REAL, has_audio INTEGER, status TEXT NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS windows (
  id INTEGER PRIMARY KEY, file INTEGER NOT NULL, start REAL NOT NULL, end REAL NOT NULL,
  has_audio INTEGER NOT NULL, thumb BLOB, has_video INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS windows_file ON windows(file);
"""

ADDED_COLUMNS = (("windows", "has_video", "INTEGER NOT NULL DEFAULT 1"),)
"""(table, column, type and default) of each column added since the first schema, in order."""


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether ``table`` has ``column``."""
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def migrate(db: sqlite3.Connection) -> None:
    """Create the tables of a new index and add the :data:`ADDED_COLUMNS` an older one lacks (the caller
    holds the index's writer lock)."""
    db.executescript(SCHEMA)
    for table, column, decl in ADDED_COLUMNS:
        if not has_column(db, table, column):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    db.commit()
