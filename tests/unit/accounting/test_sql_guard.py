from __future__ import annotations

import pytest

from services.accounting.sql_guard import ReadOnlyViolation, check_read_only
from services.accounting.sqltext import SqlSyntaxError, code_view, split_statements


@pytest.mark.parametrize(
    ("sql", "statement"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  select count() from requests ;  ", "select count() from requests"),
        (
            "-- spend per tenant\nSELECT tenant FROM requests",
            "-- spend per tenant\nSELECT tenant FROM requests",
        ),
        ("/* a /* nested */ comment */ WITH x AS (SELECT 1) SELECT * FROM x", None),
        ("# hash comment\nSHOW TABLES", None),
        ("DESCRIBE TABLE requests", None),
        ("desc requests", None),
        ("EXPLAIN SELECT 1", None),
        ("EXISTS TABLE requests", None),
        ("(SELECT 1) UNION ALL (SELECT 2)", None),
        ("SELECT ';' AS semicolon, 'DROP TABLE x'", None),
        ("SELECT 'it''s', 'a\\'b', $$x;y$$, $t$;$t$", None),
        ("SELECT 1;;", "SELECT 1"),
        ("SELECT 1 -- trailing; not a statement", None),
        ("SELECT file_name, url FROM requests", None),
        ("SELECT 'file(x)' FROM requests", None),
    ],
)
def test_accepts_one_read_only_statement(sql: str, statement: str | None) -> None:
    result = check_read_only(sql)
    assert result == (statement if statement is not None else sql.strip().rstrip(";").strip())


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "empty query"),
        ("  -- only a comment\n ; ", "empty query"),
        ("INSERT INTO requests VALUES (1)", "only read-only queries"),
        ("drop table requests", "only read-only queries"),
        ("ALTER TABLE requests DELETE WHERE 1", "only read-only queries"),
        ("SET readonly = 0", "only read-only queries"),
        ("OPTIMIZE TABLE requests FINAL", "only read-only queries"),
        ("/* SELECT */ TRUNCATE requests", "only read-only queries"),
        ("SELECT 1; DROP TABLE requests", "one statement at a time"),
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SELECT ';' ; DELETE FROM requests WHERE 1", "one statement at a time"),
        ("SELECT 'unterminated", "unterminated"),
        ("SELECT 1 /* unterminated", "unterminated"),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
        ("SELECT * FROM file('/etc/passwd')", "file()"),
        ("SELECT * FROM `file`('/etc/passwd')", "file()"),
        ("SELECT * FROM URL ('http://example.com', 'CSV')", "URL()"),
        ("SELECT * FROM s3('http://bucket/x')", "s3()"),
        ("SELECT * FROM executable('x.sh', 'CSV', 'a Int32')", "executable()"),
        ("SELECT * FROM remote('127.0.0.1', system.one)", "remote()"),
        ("SELECT * FROM icebergS3('http://x')", "icebergS3()"),
        ("WITH x AS (SELECT * FROM python('f')) SELECT * FROM x", "python()"),
    ],
)
def test_rejects_with_a_reason(sql: str, reason: str) -> None:
    with pytest.raises(ReadOnlyViolation, match=None) as info:
        check_read_only(sql)
    assert reason in str(info.value)


def test_split_statements_keeps_strings_and_drops_comment_only_parts() -> None:
    script = "-- header\nCREATE TABLE a (x String DEFAULT ';');\n/* c */ ;\nDROP TABLE b;\n-- end\n"
    assert split_statements(script) == [
        "-- header\nCREATE TABLE a (x String DEFAULT ';')",
        "DROP TABLE b",
    ]


def test_code_view_blanks_strings_and_comments() -> None:
    assert code_view("SELECT 'x;y' -- c\n, `col`") == "SELECT ''  \n,  col "


def test_unterminated_quote_is_a_syntax_error() -> None:
    with pytest.raises(SqlSyntaxError):
        split_statements('SELECT "abc')
