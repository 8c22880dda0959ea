"""A DSN's password, hidden where it sits and nowhere else.

One implementation (``lash_machine.stores._dsn``) serves the PostgreSQL
store and the ``lash-machine`` command. The property: for DSNs built from
parts (URI user info, URI query, key=value; percent-encoded, quoted,
escaped; passwords that are also part of the scheme, host, user or
database name), :func:`redact` replaces exactly the password's own place,
and libpq (through psycopg) reads the same password there.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.parse

import attrs
import psycopg
from hypothesis import assume, given
from hypothesis import strategies as st

from lash_machine.cli.target import Target
from lash_machine.stores._dsn import MASK, password_spans, redact, scrub, secrets_of


@attrs.frozen
class Built:
    """A DSN, and where its password was written into it."""

    dsn: str
    password: str
    start: int
    end: int

    def expected(self) -> str:
        return self.dsn[: self.start] + MASK + self.dsn[self.end :]


NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=10)
HOST = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=12).filter(
    lambda h: h[0].isalnum()
)
# Printable ASCII and a little beyond; libpq strings hold no NUL.
CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("é密 \t")
SCHEMES = ("postgresql", "postgres")


@st.composite
def parts(draw: st.DrawFn) -> tuple[str, str, str, str, str]:
    """scheme, user, host, database name, and a password that is often a
    piece of one of them."""
    scheme = draw(st.sampled_from(SCHEMES))
    user, host, db = draw(NAME), draw(HOST), draw(NAME)
    if draw(st.booleans()):
        password = draw(st.text(CHARS, min_size=1, max_size=12))
    else:
        source = draw(st.sampled_from([scheme, user, host, db]))
        start = draw(st.integers(0, len(source) - 1))
        password = source[start : draw(st.integers(start + 1, len(source)))]
    assume(password != MASK)
    return scheme, user, host, db, password


def _percent(draw: st.DrawFn, text: str, encode: str) -> str:
    """``text`` with each character percent-encoded or raw (the characters
    in ``encode`` always encoded)."""
    out = []
    for char in text:
        if char in encode or draw(st.booleans()):
            out.append(urllib.parse.quote(char, safe=""))
        else:
            out.append(char)
    return "".join(out)


@st.composite
def uri_userinfo(draw: st.DrawFn) -> Built:
    scheme, user, host, db, password = draw(parts())
    written = _percent(draw, password, encode="@/% \t")
    head = f"{scheme}://{user}:"
    port = draw(st.sampled_from(["", ":5432"]))
    query = draw(st.sampled_from(["", "?sslmode=disable", f"?application_name={user}"]))
    dsn = f"{head}{written}@{host}{port}/{db}{query}"
    return Built(dsn, password, len(head), len(head) + len(written))


@st.composite
def uri_query(draw: st.DrawFn) -> Built:
    scheme, user, host, db, password = draw(parts())
    written = _percent(draw, password, encode="&=%# \t")
    others = draw(st.permutations(["sslmode=disable", f"application_name={db}", f"user={user}"]))
    at = draw(st.integers(0, len(others)))
    userinfo = draw(st.sampled_from(["", f"{user}@"]))
    head = f"{scheme}://{userinfo}{host}/{db}?"
    before = "".join(f"{p}&" for p in others[:at]) + "password="
    after = "".join(f"&{p}" for p in others[at:])
    dsn = head + before + written + after
    start = len(head) + len(before)
    return Built(dsn, password, start, start + len(written))


def _keyword_value(draw: st.DrawFn, password: str) -> str:
    if draw(st.booleans()):
        return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    out = []
    for i, char in enumerate(password):
        must = char in " \t\\" or (i == 0 and char == "'")
        out.append("\\" + char if must or draw(st.booleans()) else char)
    return "".join(out)


@st.composite
def keyword(draw: st.DrawFn) -> Built:
    _, user, host, db, password = draw(parts())
    written = _keyword_value(draw, password)
    pairs = draw(st.permutations([f"host={host}", f"user={user}", f"dbname={db}", None]))
    gap = draw(st.sampled_from([" ", "  ", "\t", " \n "]))
    equals = draw(st.sampled_from(["=", " = ", "= "]))
    dsn = ""
    start = 0
    for i, pair in enumerate(pairs):
        dsn += gap if i else draw(st.sampled_from(["", " "]))
        if pair is None:
            dsn += f"password{equals}"
            start = len(dsn)
            dsn += written
        else:
            dsn += pair
    return Built(dsn, password, start, start + len(written))


@given(st.one_of(uri_userinfo(), uri_query(), keyword()))
def test_redact_hides_the_password_at_its_place_and_changes_nothing_else(built: Built) -> None:
    # libpq reads the password the DSN was built with: the DSN is valid.
    assert psycopg.conninfo.conninfo_to_dict(built.dsn).get("password") == built.password
    assert [value for _, _, value in password_spans(built.dsn)] == [built.password]
    assert redact(built.dsn) == built.expected()
    assert Target(dsn=built.dsn).label == built.expected()


@given(st.one_of(uri_userinfo(), uri_query(), keyword()))
def test_scrub_hides_every_spelling_in_a_message_and_keeps_the_redacted_dsn(
    built: Built,
) -> None:
    assume("*" not in built.password)
    written = built.dsn[built.start : built.end]
    message = f"failed ({built.password}) [{written}]\n{built.dsn}"
    scrubbed = scrub(message, built.dsn)
    prose, _, shown = scrubbed.partition("\n")
    assert shown == built.expected()
    assert built.password not in prose and written not in prose
    assert built.password in secrets_of(built.dsn)


def test_a_password_that_is_part_of_the_scheme_or_host_hides_only_itself() -> None:
    assert redact("postgresql://u:post@h/db") == "postgresql://u:***@h/db"
    assert (
        redact("postgresql://db:db@db/db?password=db") == "postgresql://db:***@db/db?password=***"
    )
    assert redact("host=h user=h password=h dbname=h") == "host=h user=h password=*** dbname=h"
    assert scrub("no route to h for postgresql://u:h@h/db", "postgresql://u:h@h/db") == (
        "no route to *** for postgresql://u:***@h/db"
    )


def test_malformed_strings_still_hide_what_looks_like_a_password() -> None:
    # libpq refuses these; a message that quotes them must not show the password.
    assert redact("host h password=secret") == "host h password=***"
    assert redact("host=h password='unterminated") == "host=h password=***"
    assert redact("mysql://u:secret@h/db") == "mysql://u:***@h/db"
    assert redact("host=h PASSWORD=secret") == "host=h PASSWORD=***"
    assert redact("postgresql://h/db?pass%77ord=secret") == "postgresql://h/db?pass%77ord=***"
    assert secrets_of("postgresql://u:@h/db") == []


def test_the_dsn_module_does_not_import_psycopg() -> None:
    probe = (
        "import sys; import lash_machine.stores._dsn, lash_machine.cli;"
        " print('psycopg' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert shown == "False\n"
