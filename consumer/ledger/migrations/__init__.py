"""Numbered schema migrations, one folder per backend (`sqlite/`, `postgres/`).

`NNNN_what.sql` files are applied in order, each once, inside the migrating transaction,
and recorded in `schema_migrations`. A ledger only ever moves forward: a change to the
schema is a new file, never an edit of an applied one. Statements are separated by `;`,
which appears nowhere else except inside a `$$`-quoted function body.
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
    statements: list[str] = []
    current = ""
    for n, part in enumerate("\n".join(lines).split("$$")):
        if n % 2:  # a function body, kept whole
            current += f"$${part}$$"
            continue
        *ended, current_rest = part.split(";")
        for piece in ended:
            statements.append(current + piece)
            current = ""
        current += current_rest
    statements.append(current)
    return tuple(stmt.strip() for stmt in statements if stmt.strip())
