"""The exception tree drawn in consumer/errors.py is the tree the code has."""

from __future__ import annotations

import importlib
import re

import pytest

import consumer.errors
from consumer.errors import ErasureError, FatalError, RejectedError, TransientError

# "     │    ├── LedgerUnavailable        consumer.ledger.protocol: ..."
DRAWN = re.compile(r"^(?P<indent>[ │]*)[├└]── (?P<name>\w+)(?:\s+(?P<module>consumer\.[\w.]+):)?")
KINDS = (FatalError, TransientError, RejectedError)


def drawn_tree() -> list[tuple[type[BaseException], type[BaseException] | None]]:
    """(class, parent) for every class the docstring draws, imported from its module."""
    text = consumer.errors.__doc__ or ""
    lines = text.split("\n\n")[2].splitlines()  # the third paragraph is the drawing
    found: list[tuple[type[BaseException], type[BaseException] | None]] = [(ErasureError, None)]
    ancestry: list[tuple[int, type[BaseException]]] = [(0, ErasureError)]
    assert lines[0].strip() == "ErasureError"
    for line in lines[1:]:
        match = DRAWN.match(line)
        if match is None:
            continue  # a continuation of the description above
        depth = len(match["indent"])
        module = importlib.import_module(match["module"] or "consumer.errors")
        cls = getattr(module, match["name"])
        ancestry = [(d, c) for d, c in ancestry if d < depth]
        found.append((cls, ancestry[-1][1] if ancestry else None))
        ancestry.append((depth, cls))
    return found


def test_the_drawing_names_the_worker_errors_and_their_kinds() -> None:
    names = {cls.__name__ for cls, _ in drawn_tree()}
    assert {"ErasureError", "ConfigError", "LedgerUnavailable", "KafkaFailure"} <= names
    assert {"InvalidRequest", "PermanentVendorError", "VendorAuthError"} <= names


@pytest.mark.parametrize(
    ("cls", "parent"), drawn_tree(), ids=lambda value: getattr(value, "__name__", "")
)
def test_each_drawn_error_derives_from_the_one_drawn_above_it(
    cls: type[BaseException], parent: type[BaseException] | None
) -> None:
    if parent is None:
        assert cls is ErasureError
        return
    assert issubclass(cls, parent)
    if cls not in KINDS:
        assert [kind for kind in KINDS if issubclass(cls, kind)] == [
            next(kind for kind in KINDS if issubclass(parent, kind) or parent is kind)
        ], "every error is of exactly one kind"
