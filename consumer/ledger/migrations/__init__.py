"""Numbered schema migrations, one folder per backend (`sqlite/`, `postgres/`).

`NNNN_what.sql` files are applied in order, each once, inside the migrating transaction,
and recorded in `schema_migrations`. A ledger only ever moves forward: a change to the
schema is a new file, never an edit of an applied one. Statements are separated by `;`
and none may contain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations(dialect: str) -> list[Migration]:
    """The backend's migrations in version order."""
    folder = resources.files(__name__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, _statements(entry.read_text("utf-8"))))
    return sorted(found, key=lambda migration: migration.version)


def _statements(text: str) -> tuple[str, ...]:
    lines = (line.split("--", 1)[0] for line in text.splitlines())
    return tuple(stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip())
