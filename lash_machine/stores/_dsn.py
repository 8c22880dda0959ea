"""Keeping a DSN's password out of errors, logs and attributes.

A libpq connection string may carry a password in three places: a URI's
user info (``postgresql://u:pw@h/db``), a URI's query (``?password=pw``),
or the ``password`` key of the key=value form (``password=pw`` or
``password='p w'``). :func:`password_spans` finds those places the way
libpq reads the string, without psycopg (SQLite-only installs lack it), so
that :func:`redact` replaces the password there and nowhere else: a
password that is also part of the scheme, host, user or database name
leaves those untouched.

Error messages are another matter: a driver may quote the password
anywhere in its text, in any spelling. :func:`scrub` replaces every
spelling of it (raw, quoted, percent-decoded) wherever it occurs, except
inside the redacted DSN itself. Every message a
:class:`~lash_machine.stores.postgres.PostgresStore` raises, and every
error the ``lash-machine`` command prints, passes through :func:`scrub`.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["MASK", "password_spans", "redact", "scrub", "secrets_of"]

#: What a password is replaced by.
MASK = "***"

#: The whitespace libpq's key=value parser skips (C's ``isspace``).
_SPACE = frozenset(" \t\n\v\f\r")

#: A URI's start. libpq knows only ``postgresql://`` and ``postgres://``;
#: any scheme is read as a URI here, so a mistyped one hides its password
#: too.
_SCHEME = re.compile(r"[ \t\n\v\f\r]*[A-Za-z][A-Za-z0-9+.-]*://")


def password_spans(dsn: str) -> list[tuple[int, int, str]]:
    """Where ``dsn`` holds a password: ``(start, end, value)`` for each
    place, in order, ``dsn[start:end]`` as written and ``value`` as libpq
    reads it (percent-decoded, unquoted). An empty password is no place.

    The key ``password`` is matched in any case (libpq only knows it in
    lower case, but another spelling is surely meant as a password). A
    string libpq would refuse is read as far as it goes: any later
    ``password=`` still counts.
    """
    scheme = _SCHEME.match(dsn)
    if scheme is not None:
        return _uri_spans(dsn, scheme.end())
    return _keyword_spans(dsn)


def _uri_spans(dsn: str, start: int) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    # User info is whatever precedes the first '@', unless a '/' comes
    # first; the password runs from the first ':' in it to that '@'.
    at = start
    while at < len(dsn) and dsn[at] not in "@/":
        at += 1
    rest = start
    if at < len(dsn) and dsn[at] == "@":
        colon = dsn.find(":", start, at)
        if colon != -1 and colon + 1 < at:
            spans.append((colon + 1, at, _decoded(dsn[colon + 1 : at])))
        rest = at + 1
    # The query starts at the first '?' after the hosts (an IPv6 address
    # in brackets holds none of its own).
    bracket = False
    query = None
    for i in range(rest, len(dsn)):
        char = dsn[i]
        if char == "[":
            bracket = True
        elif char == "]":
            bracket = False
        elif char == "?" and not bracket:
            query = i + 1
            break
    if query is None:
        return spans
    position = query
    for part in dsn[query:].split("&"):
        key, equals, value = part.partition("=")
        if equals and value and _decoded(key).lower() == "password":
            begin = position + len(key) + 1
            spans.append((begin, position + len(part), _decoded(value)))
        position += len(part) + 1
    return spans


def _decoded(text: str) -> str:
    return urllib.parse.unquote(text)


def _keyword_spans(dsn: str) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    end = len(dsn)
    i = 0
    while i < end:
        while i < end and dsn[i] in _SPACE:
            i += 1
        name_start = i
        while i < end and dsn[i] != "=" and dsn[i] not in _SPACE:
            i += 1
        name = dsn[name_start:i]
        while i < end and dsn[i] in _SPACE:
            i += 1
        if i >= end or dsn[i] != "=":
            # libpq refuses the string here ('missing "="'); read on from
            # the next word, in case a password follows.
            continue
        i += 1
        while i < end and dsn[i] in _SPACE:
            i += 1
        value_start = i
        i, value = _keyword_value(dsn, i)
        if name.lower() == "password" and i > value_start and value:
            spans.append((value_start, i, value))
    return spans


def _keyword_value(dsn: str, i: int) -> tuple[int, str]:
    """The value starting at ``dsn[i]``: where it ends, and its text (a
    backslash takes the next character as it is; quotes may hold spaces)."""
    end = len(dsn)
    quoted = i < end and dsn[i] == "'"
    if quoted:
        i += 1
    chars: list[str] = []
    while i < end:
        char = dsn[i]
        if char == "\\":
            if i + 1 < end:
                chars.append(dsn[i + 1])
            i += 2
        elif quoted and char == "'":
            return i + 1, "".join(chars)
        elif not quoted and char in _SPACE:
            break
        else:
            chars.append(char)
            i += 1
    # An unquoted value ends at a space; an unterminated quote at the end.
    return min(i, end), "".join(chars)


def secrets_of(dsn: str) -> list[str]:
    """Every spelling of ``dsn``'s password (as written, unquoted,
    as libpq reads it, quoted as libpq would quote it), longest first; empty
    when there is none."""
    found: set[str] = set()
    for start, end, value in password_spans(dsn):
        written = dsn[start:end]
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        found.update({written, written.strip("'"), value, f"'{escaped}'"})
    found -= {"", MASK}
    return sorted(found, key=len, reverse=True)


def redact(dsn: str) -> str:
    """``dsn`` with each place that holds a password (see
    :func:`password_spans`) replaced by ``***``, and nothing else changed:
    safe to show."""
    parts: list[str] = []
    done = 0
    for start, end, _ in password_spans(dsn):
        parts += [dsn[done:start], MASK]
        done = end
    parts.append(dsn[done:])
    return "".join(parts)


def scrub(text: str, dsn: str) -> str:
    """``text`` with every spelling of ``dsn``'s password replaced by
    ``***``, wherever it occurs; ``dsn`` itself, when ``text`` quotes it, is
    shown :func:`redact`-ed (its scheme, host and names intact)."""
    secrets = secrets_of(dsn)
    if not secrets:
        return text
    shown = redact(dsn)
    pieces = text.replace(dsn, shown).split(shown)
    return shown.join(_without(piece, secrets) for piece in pieces)


def _without(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
