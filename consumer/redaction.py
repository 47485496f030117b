"""One place that knows what a credential looks like, so every URL, repr and log line the
worker shows goes through the same masks (contract §3: secrets never appear).

Credentials reach us in three shapes: userinfo in a URL (`https://key:secret@registry/`,
`postgresql://user:pass@db/`), a query parameter (`postgresql://db/x?password=...`), and a
librdkafka property whose name says it is secret (`sasl.password`, `ssl.key.pem`, ...).
Usernames and hosts stay visible: an operator needs them to tell which account failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote_plus

MASK = "***"

# Substrings of a property or parameter name that mark its value as a credential.
_SECRET_NAME_PARTS = (
    "password",
    "passphrase",
    "passwd",
    "secret",
    "token",
    "credential",
    "private",
    "apikey",
    "api_key",
    "api-key",
    "key.pem",
    "oauthbearer.config",
    "jaas",
)
# A URL inside free text, up to whitespace, a quote or a closing bracket of the sentence.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
# `name=value` in free text (libpq keyword DSNs, librdkafka property dumps).
_ASSIGNMENT_IN_TEXT = re.compile(
    r"(?P<name>[\w.-]+)(?P<eq>\s*=\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)


def is_secret_name(name: str) -> bool:
    """Whether a property or query parameter called `name` holds a credential."""
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_NAME_PARTS)


def redact_properties(properties: Mapping[str, object]) -> dict[str, object]:
    """The mapping with the value of every secret-looking key masked (librdkafka config)."""
    return {key: MASK if is_secret_name(key) else value for key, value in properties.items()}


def redact_url(url: str) -> str:
    """`url` without the password of its userinfo and without secret query parameters.

    Parsed by hand rather than with `urlsplit`: a secret spliced in from the environment
    may hold a raw `/`, `?`, `#` or `[`, which makes `urlsplit` misplace (and so show) part
    of it, or raise. The userinfo is everything before the URL's last `@`; a URL with a port
    and an `@` further on (an e-mail in the query) is over-redacted, the safe way to be wrong.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        rest = f"{rest.partition(':')[0]}:{MASK}{rest[at:]}"
    rest, hash_mark, fragment = rest.partition("#")
    rest, question_mark, query = rest.partition("?")
    if query:
        query = _redacted_query(query)
    return f"{scheme}://{rest}{question_mark}{query}{hash_mark}{fragment}"


def redact_text(text: str) -> str:
    """Free text (a log message, an error) with every URL redacted and every secret-looking
    `name=value` masked. Every log line passes here: the cheap substring tests skip the
    regular expressions for the lines (nearly all) that hold neither."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    if "=" in text:
        text = _ASSIGNMENT_IN_TEXT.sub(_masked_assignment, text)
    return text


def _redacted_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        pairs.append(f"{name}={MASK}" if eq and is_secret_name(unquote_plus(name)) else pair)
    return "&".join(pairs)


def _masked_assignment(match: re.Match[str]) -> str:
    if not is_secret_name(match.group("name")) or match.group("value") == MASK:
        return match.group(0)
    return f"{match.group('name')}{match.group('eq')}{MASK}"
