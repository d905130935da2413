"""A read-only check for analyst SQL, in front of the engine's own ``readonly``.

Defence in depth: the store also runs every analyst query on a connection
with ``readonly=2``. The guard exists because the embedded engine (chDB, which
is ``clickhouse-local``) still lets a read-only session write files with
``INTO OUTFILE`` and reach the file system, the network and other processes
through table functions such as ``file()``, ``url()`` or ``executable()``; a
server restricts those with grants, chDB does not.
"""

from __future__ import annotations

import re
from typing import Final

from services.accounting.sqltext import SqlSyntaxError, code_view, split_statements

ALLOWED_STATEMENTS: Final = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")

# Functions that read or write outside the database (files, URLs, object
# stores, other servers, processes). Matched case-insensitively as ``name(``.
_EXTERNAL_FUNCTIONS: Final = (
    "arrowstream",
    "azureBlobStorage",
    "azureBlobStorageCluster",
    "bigquery",
    "cluster",
    "clusterAllReplicas",
    "cosn",
    "eval",
    "executable",
    "file",
    "fileCluster",
    "filesystem",
    "gcs",
    "hdfs",
    "hdfsCluster",
    "input",
    "jdbc",
    "mongodb",
    "mysql",
    "odbc",
    "oss",
    "postgresql",
    "prometheusQuery",
    "prometheusQueryRange",
    "python",
    "redis",
    "remote",
    "remoteSecure",
    "s3",
    "s3Cluster",
    "sqlite",
    "url",
    "urlCluster",
    "ytsaurus",
    ").split(",
)
_EXTERNAL_PREFIXES: Final = ("deltaLake", "iceberg", "hudi", "paimon")

_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_EXTERNAL = frozenset(name.lower() for name in _EXTERNAL_FUNCTIONS)
_EXTERNAL_PREFIX = tuple(prefix.lower() for prefix in _EXTERNAL_PREFIXES)


class ReadOnlyViolation(ValueError):
    """The SQL is not one read-only statement; the message says why."""


def check_read_only(sql: str) -> str:
    """Return the single statement in ``sql`` (no trailing ``;``) or raise ``ReadOnlyViolation``."""
    try:
        statements = split_statements(sql)
        if len(statements) != 1:
            raise ReadOnlyViolation(
                "empty query" if not statements else
                f"one statement at a time, got {len(statements)} separated by ';'"
            )  # fmt: skip
        statement = statements[0]
        code = code_view(statement)
    except SqlSyntaxError as exc:
        raise ReadOnlyViolation(str(exc)) from None
    _check_first_word(code)
    _check_no_outfile(code)
    _check_no_external_functions(code)
    return statement


def _check_first_word(code: str) -> None:
    match = _FIRST_WORD.match(code)
    word = match.group(1).upper() if match else ""
    if word not in ALLOWED_STATEMENTS:
        allowed = ", ".join(ALLOWED_STATEMENTS)
        shown = word or code.strip()[:20]
        raise ReadOnlyViolation(f"only read-only queries are allowed ({allowed}); got {shown!r}")


def _check_no_outfile(code: str) -> None:
    if _OUTFILE.search(code):
        raise ReadOnlyViolation("INTO OUTFILE is not allowed: results come back as the reply")


def _check_no_external_functions(code: str) -> None:
    for match in _CALL.finditer(code):
        name = match.group(1).lower()
        if name in _EXTERNAL or name.startswith(_EXTERNAL_PREFIX):
            raise ReadOnlyViolation(
                f"{match.group(1)}() reaches outside the database and is not allowed here"
            )
