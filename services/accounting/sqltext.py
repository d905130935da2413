"""A small lexer for ClickHouse SQL text: comments, quotes and statement ends.

It knows just enough of ClickHouse's lexical rules to split a script into
statements and to look at a statement's code with comments removed and string
literals blanked: ``--``, ``#`` and nested ``/* */`` comments, ``'strings'``
with backslash escapes and doubled quotes, ``"quoted"`` and `` `quoted` ``
identifiers, and ``$tag$heredoc$tag$`` strings. It never executes or rewrites
a query; callers use it to decide, the engine still parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

Kind = Literal["code", "comment", "string", "ident", "semicolon"]

_HEREDOC = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_SPECIAL = re.compile(r"--|#|/\*|['\"`$;]")


class SqlSyntaxError(ValueError):
    """The text cannot be split safely (an unterminated quote or comment)."""


def scan(sql: str) -> Iterator[tuple[Kind, str]]:
    """Yield ``(kind, text)`` pieces that together are exactly ``sql``."""
    i, n = 0, len(sql)
    while i < n:
        match = _SPECIAL.search(sql, i)
        if match is None:
            yield "code", sql[i:]
            return
        if match.start() > i:
            yield "code", sql[i : match.start()]
            i = match.start()
        token = match.group(0)
        if token in ("--", "#"):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            yield "comment", sql[i:end]
        elif token == "/*":
            end = _end_of_block_comment(sql, i)
            yield "comment", sql[i:end]
        elif token == "'":
            end = _end_of_quoted(sql, i)
            yield "string", sql[i:end]
        elif token in ('"', "`"):
            end = _end_of_quoted(sql, i)
            yield "ident", sql[i:end]
        elif token == ";":
            end = i + 1
            yield "semicolon", ";"
        else:  # "$": a heredoc string, or an ordinary character
            end = _end_of_heredoc(sql, i)
            yield ("string" if end > i + 1 else "code"), sql[i:end]
        i = end


def split_statements(sql: str) -> list[str]:
    """The statements of a script, without separators; comment-only parts dropped."""
    statements: list[str] = []
    current: list[str] = []
    has_code = False
    for kind, text in scan(sql):
        if kind == "semicolon":
            if has_code:
                statements.append("".join(current).strip())
            current, has_code = [], False
            continue
        current.append(text)
        has_code = has_code or (kind != "comment" and bool(text.strip()))
    if has_code:
        statements.append("".join(current).strip())
    return statements


def code_view(sql: str) -> str:
    """``sql`` with comments as spaces, strings as ``''`` and quoted names unquoted."""
    parts: list[str] = []
    for kind, text in scan(sql):
        if kind == "comment":
            parts.append(" ")
        elif kind == "string":
            parts.append("''")
        elif kind == "ident":
            parts.append(f" {text[1:-1]} ")
        else:
            parts.append(text)
    return "".join(parts)


def _end_of_quoted(sql: str, start: int) -> int:
    quote, i, n = sql[start], start + 1, len(sql)
    while i < n:
        c = sql[i]
        if c == "\\":
            i += 2
        elif c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise SqlSyntaxError(f"unterminated {quote} quote starting at position {start}")


def _end_of_block_comment(sql: str, start: int) -> int:
    depth, i, n = 1, start + 2, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise SqlSyntaxError(f"unterminated /* comment starting at position {start}")


def _end_of_heredoc(sql: str, start: int) -> int:
    match = _HEREDOC.match(sql, start)
    if match is None:
        return start + 1
    tag = match.group(0)
    end = sql.find(tag, match.end())
    if end < 0:
        raise SqlSyntaxError(f"unterminated {tag} string starting at position {start}")
    return end + len(tag)
