"""Keeping a DSN's password out of errors, logs and attributes.

A libpq connection string may carry a password (``postgresql://u:pw@h/db``,
``?password=pw``, or ``password=pw`` in the key=value form). Every message
a :class:`~lash_machine.stores.postgres.PostgresStore` raises passes through
:func:`scrub`, and the store shows its DSN only :func:`redact`-ed.
"""

from __future__ import annotations

import re
import urllib.parse

import psycopg

__all__ = ["redact", "scrub", "secrets_of"]

# What a password looks like in each form, found even when libpq could not
# parse the whole string (its parse errors may quote the string).
_URI_USERINFO = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*?:(?P<secret>[^@/?#]*)@")
_KEYWORD = re.compile(r"""\bpassword\s*=\s*(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&#]+)""")


def secrets_of(dsn: str) -> list[str]:
    """Every spelling of the password in ``dsn`` (raw, quoted, percent-
    encoded or decoded), longest first; empty when there is none."""
    found: set[str] = set()
    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        found.add(str(password))
    for pattern in (_URI_USERINFO, _KEYWORD):
        for match in pattern.finditer(dsn):
            secret = match.group("secret")
            found.update({secret, secret.strip("'"), urllib.parse.unquote(secret)})
    found.discard("")
    return sorted(found, key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """``text`` with every spelling of ``dsn``'s password replaced by ``***``."""
    for secret in secrets_of(dsn):
        text = text.replace(secret, "***")
    return text


def redact(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***``: safe to show."""
    return scrub(dsn, dsn)
