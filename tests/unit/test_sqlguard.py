"""The SQL guard: lexing and splitting, classification, refusals (with bypass attempts), read-only mode,
acceptance of legitimate SQL, run_sql / run_sql_transaction contracts, and fast-path/token-path agreement.

Speed (not a test): on a 2-vCPU CI box check_run_sql takes ~15-25 us for a typical 200-character SELECT
(fast path) and ~100-150 us for statements that need the token path, e.g.
``python -m timeit -s "from agentdb.tools.sqlguard import check_run_sql as c; s='SELECT ...'" "c(s, read_only=True)"``.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from agentdb.errors import InvalidInput
from agentdb.tools import sqlguard
from agentdb.tools.sqlguard import (
    MAX_STATEMENT_CHARS,
    MAX_TRANSACTION_STATEMENTS,
    Classified,
    SqlRefused,
    StatementKind,
    check_run_sql,
    check_statement,
    check_transaction,
    classify,
    has_top_level_keyword,
    leading_keywords,
    split_statements,
)

K = StatementKind


def refused_run_sql(sql: str, *, read_only: bool = False) -> SqlRefused:
    with pytest.raises(SqlRefused) as info:
        check_run_sql(sql, read_only=read_only)
    return info.value


def refused_transaction(statements: list[str], *, read_only: bool = False) -> SqlRefused:
    with pytest.raises(SqlRefused) as info:
        check_transaction(statements, read_only=read_only)
    return info.value


def refused_both(sql: str, *, read_only: bool = False) -> tuple[SqlRefused, SqlRefused]:
    return refused_run_sql(sql, read_only=read_only), refused_transaction(["SELECT 1", sql], read_only=read_only)


# --------------------------------------------------------------------------------------------------
# The error type


def test_sql_refused_is_an_invalid_input_with_a_stable_code() -> None:
    exc = refused_run_sql("BEGIN")
    assert isinstance(exc, InvalidInput)
    assert exc.code == "sql_refused"
    assert exc.status == 400
    assert exc.reason == "transaction_control"
    assert str(exc) == exc.message
    assert SqlRefused("x").code == "sql_refused"


# --------------------------------------------------------------------------------------------------
# Splitting


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1;", ["SELECT 1"]),
        ("  SELECT 1 ;; ; \n", ["SELECT 1"]),
        (";", []),
        ("", []),
        ("  -- only a comment", []),
        ("/* only */ ; /* comments */", []),
        ("SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT 'a;b'; SELECT 2", ["SELECT 'a;b'", "SELECT 2"]),
        ("SELECT 'it''s; here'", ["SELECT 'it''s; here'"]),
        (r"SELECT E'it\'s; here'", [r"SELECT E'it\'s; here'"]),
        (r"SELECT e'it\'s; here'; SELECT 2", [r"SELECT e'it\'s; here'", "SELECT 2"]),
        (r"SELECT E'\\'; SELECT 2", [r"SELECT E'\\'", "SELECT 2"]),
        (r"SELECT E'a''b;c'", [r"SELECT E'a''b;c'"]),
        # standard_conforming_strings: in a plain string a backslash is just a character
        (r"SELECT 'a\'; SELECT 2", [r"SELECT 'a\'", "SELECT 2"]),
        (r"SELECT U&'d\0061t; a'", [r"SELECT U&'d\0061t; a'"]),
        ("SELECT B'01;', X'1F;', N'n;'", ["SELECT B'01;', X'1F;', N'n;'"]),
        ('SELECT "a;b""c"; SELECT 2', ['SELECT "a;b""c"', "SELECT 2"]),
        ('SELECT U&"a;b"; SELECT 2', ['SELECT U&"a;b"', "SELECT 2"]),
        ("SELECT $$a;b$$; SELECT 2", ["SELECT $$a;b$$", "SELECT 2"]),
        ("SELECT $tag$ a $$ ; $x$ $tag$; SELECT 2", ["SELECT $tag$ a $$ ; $x$ $tag$", "SELECT 2"]),
        ("SELECT $a$ $b$ ; $a$; SELECT 2", ["SELECT $a$ $b$ ; $a$", "SELECT 2"]),
        ("SELECT $_1$;$_1$", ["SELECT $_1$;$_1$"]),
        ("SELECT $1; SELECT $2", ["SELECT $1", "SELECT $2"]),  # parameters, not dollar-quote tags
        ("SELECT $1::int + $2; SELECT 3", ["SELECT $1::int + $2", "SELECT 3"]),
        ("SELECT a$b$ FROM t; SELECT 2", ["SELECT a$b$ FROM t", "SELECT 2"]),  # $ inside an identifier
        ("SELECT 1 -- c; SELECT 2\n; SELECT 3", ["SELECT 1", "SELECT 3"]),
        ("SELECT 1 --c\r; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1 /* a /* nested; */ still; */; SELECT 2", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1 /**/; SELECT /*/ x; */ 2", ["SELECT 1", "SELECT /*/ x; */ 2"]),
        ("/* lead */ SELECT 1; SELECT 2 -- trail", ["/* lead */ SELECT 1", "SELECT 2"]),
        ("SELECT 1 +/* c; */ 2", ["SELECT 1 +/* c; */ 2"]),
        # an E'' string continues across a newline in E mode: the \' below is an escaped quote
        ("SELECT E'a'\n'\\' ; x'; SELECT 2", ["SELECT E'a'\n'\\' ; x'", "SELECT 2"]),
        ("SELECT E'a' -- c\n'\\' ; x'; SELECT 2", ["SELECT E'a' -- c\n'\\' ; x'", "SELECT 2"]),
        ("SELECT 'a'\n'b;c'; SELECT 2", ["SELECT 'a'\n'b;c'", "SELECT 2"]),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3",
            ["CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END", "SELECT 3"],
        ),
        (
            "create or replace procedure p() language sql begin atomic insert into t values (1); end",
            ["create or replace procedure p() language sql begin atomic insert into t values (1); end"],
        ),
        (
            "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b); SELECT 1",
            ["CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)", "SELECT 1"],
        ),
        ("SELECT 1); SELECT 2", ["SELECT 1)", "SELECT 2"]),  # a stray ) cannot hide the next ;
        ("SELECT 'x' BEGIN; COMMIT", ["SELECT 'x' BEGIN", "COMMIT"]),  # BEGIN ATOMIC only counts in CREATE FUNCTION
    ],
)
def test_split_statements(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELECT 'abc", "unterminated quoted string"),
        ("SELECT 'abc''", "unterminated quoted string"),
        (r"SELECT E'abc\'", "unterminated quoted string"),
        ('SELECT "abc', "unterminated quoted identifier"),
        ('SELECT U&"abc', "unterminated quoted identifier"),
        ("SELECT $$abc", "unterminated dollar-quoted string"),
        ("SELECT $x$abc$y$", "unterminated dollar-quoted string"),
        ("SELECT 1 /* a /* b */", "unterminated /* comment"),
        ("SELECT 1 /*", "unterminated /* comment"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;", "unterminated BEGIN ATOMIC"),
        ("SELECT 1\x00", "NUL"),
    ],
)
def test_unterminated_constructs_are_refused_with_a_clear_message(sql: str, fragment: str) -> None:
    with pytest.raises(SqlRefused) as info:
        split_statements(sql)
    assert fragment in info.value.message
    assert info.value.reason == "syntax"
    assert fragment in refused_run_sql(sql).message
    assert fragment in refused_transaction([sql]).message


def test_the_guard_only_ever_raises_sql_refused() -> None:
    alphabet = ["'", '"', "$", "$$", "$a$", "--", "/*", "*/", "\n", ";", "(", ")", "\\", "E", "U&", "e'", "&", " ", "x"]
    alphabet += ["SELECT", "BEGIN", "ATOMIC", "END", "CREATE FUNCTION f() ", "SET", "EXPLAIN", "(ANALYZE", "WITH"]
    alphabet += ["COPY", "TO", "GRANT", "ON", "UESCAPE", "'!'", ",", ".", "=", "1", "é", "\x00", "\v", "\r", "RETURN"]
    rng = random.Random(20240611)
    for _ in range(3000):
        sql = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        for call in (
            lambda s: check_run_sql(s, read_only=rng.random() < 0.5),
            lambda s: check_transaction([s], read_only=False),
            classify,
            split_statements,
            leading_keywords,
            lambda s: has_top_level_keyword(s, "RETURNING"),
        ):
            with contextlib.suppress(SqlRefused):
                call(sql)


# --------------------------------------------------------------------------------------------------
# Keywords


@pytest.mark.parametrize(
    ("sql", "n", "expected"),
    [
        ("(SELECT 1)", 3, ["SELECT"]),
        ("((select a from t))", 2, ["SELECT", "A"]),
        ("/* c */ set/**/statement_timeout=0", 3, ["SET", "STATEMENT_TIMEOUT"]),
        ("  -- x\n begin", 3, ["BEGIN"]),
        ("SET LOCAL ROLE x", 3, ["SET", "LOCAL", "ROLE"]),
        ("SET LOCAL ROLE x", 1, ["SET"]),
        ('"select" 1', 3, []),  # a quoted identifier is never a keyword
        ("", 3, []),
        ("CREATE OR REPLACE FUNCTION f()", 5, ["CREATE", "OR", "REPLACE", "FUNCTION", "F"]),
    ],
)
def test_leading_keywords(sql: str, n: int, expected: list[str]) -> None:
    assert leading_keywords(sql, n) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO t VALUES (1) RETURNING id", True),
        ("insert into t values (1) returning id", True),
        ("DELETE FROM t WHERE x IN (SELECT 1) RETURNING *", True),
        # the CTE's RETURNING is at depth 1: the statement's rows come from its main SELECT
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", False),
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) INSERT INTO log SELECT * FROM x", False),
        ("UPDATE t SET a = b.returning FROM b", False),
        ("INSERT INTO t SELECT 1 AS returning", False),
        ("INSERT INTO t SELECT 'RETURNING'", False),
        ("INSERT INTO t SELECT 1 -- RETURNING *", False),
        ("INSERT INTO t SELECT 1 /* RETURNING */", False),
        ('UPDATE t SET "returning" = 1', False),
    ],
)
def test_has_top_level_returning(sql: str, expected: bool) -> None:
    assert has_top_level_keyword(sql, "RETURNING") is expected
    assert has_top_level_keyword(sql, "returning") is expected


def test_has_top_level_keyword_counts_only_depth_zero() -> None:
    assert has_top_level_keyword("SELECT * FROM t WHERE a IN (SELECT b FROM u)", "FROM")
    assert not has_top_level_keyword("SELECT (SELECT b FROM u)", "FROM")


# --------------------------------------------------------------------------------------------------
# Classification


@pytest.mark.parametrize(
    ("sql", "kind", "main", "returns_rows", "writes", "has_returning", "wrappable"),
    [
        ("SELECT 1", K.QUERY, "SELECT", True, False, False, True),
        ("select 1;", K.QUERY, "SELECT", True, False, False, True),
        ("(SELECT 1) UNION (SELECT 2)", K.QUERY, "SELECT", True, False, False, True),
        ("VALUES (1), (2)", K.QUERY, "VALUES", True, False, False, True),
        ("TABLE t", K.QUERY, "TABLE", True, False, False, True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", K.QUERY, "SELECT", True, False, False, True),
        (
            "WITH x (a) AS NOT MATERIALIZED (SELECT 1), y AS (TABLE x) VALUES (1)",
            K.QUERY,
            "VALUES",
            True,
            False,
            False,
            True,
        ),
        (
            "WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
            K.QUERY,
            "SELECT",
            True,
            False,
            False,
            True,
        ),
        (
            "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) CYCLE n SET c USING p SELECT * FROM t",
            K.QUERY,
            "SELECT",
            True,
            False,
            False,
            True,
        ),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", K.QUERY, "SELECT", True, True, False, False),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x RETURNING *", K.DML, "INSERT", True, True, True, True),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", K.DML, "INSERT", False, True, False, False),
        (
            "WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d RETURNING *",
            K.DML,
            "INSERT",
            True,
            True,
            True,
            False,
        ),
        ("WITH u AS (SELECT 1) UPDATE t SET x = 1 FROM u RETURNING t.*", K.DML, "UPDATE", True, True, True, True),
        ("INSERT INTO t VALUES (1) RETURNING id", K.DML, "INSERT", True, True, True, True),
        ("UPDATE t SET x = 1", K.DML, "UPDATE", False, True, False, False),
        ("DELETE FROM t", K.DML, "DELETE", False, True, False, False),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET x = s.x",
            K.DML,
            "MERGE",
            False,
            True,
            False,
            False,
        ),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 2 RETURNING *",
            K.DML,
            "INSERT",
            True,
            True,
            True,
            True,
        ),
        ("SELECT * INTO t2 FROM t", K.QUERY, "SELECT", False, True, False, False),
        ("SELECT * FROM t FOR UPDATE", K.QUERY, "SELECT", True, False, False, True),
        ("SELECT t.update, t.delete FROM t", K.QUERY, "SELECT", True, False, False, True),
        ("EXPLAIN SELECT 1", K.EXPLAIN, "SELECT", True, False, False, False),
        ("EXPLAIN DELETE FROM t", K.EXPLAIN, "DELETE", True, False, False, False),
        ("EXPLAIN ANALYZE DELETE FROM t", K.EXPLAIN, "DELETE", True, True, False, False),
        ("EXPLAIN ANALYSE VERBOSE DELETE FROM t", K.EXPLAIN, "DELETE", True, True, False, False),
        ("EXPLAIN (ANALYZE false) DELETE FROM t", K.EXPLAIN, "DELETE", True, False, False, False),
        ("EXPLAIN (ANALYZE off, COSTS) DELETE FROM t", K.EXPLAIN, "DELETE", True, False, False, False),
        ("EXPLAIN (FORMAT JSON, ANALYZE) UPDATE t SET x = 1", K.EXPLAIN, "UPDATE", True, True, False, False),
        ('EXPLAIN ("analyze" 1) UPDATE t SET x = 1', K.EXPLAIN, "UPDATE", True, True, False, False),
        ("SHOW search_path", K.SHOW, "SHOW", True, False, False, False),
        ("CREATE TABLE t (id int)", K.DDL, "CREATE", False, True, False, False),
        ("COPY t TO STDOUT", K.COPY, "COPY", False, False, False, False),
        ("COPY t FROM STDIN", K.COPY, "COPY", False, True, False, False),
        ("CALL p()", K.UTILITY, "CALL", False, True, False, False),
        ("FETCH 10 FROM c", K.UTILITY, "FETCH", True, False, False, False),
        ("SET CONSTRAINTS ALL DEFERRED", K.UTILITY, "SET", False, False, False, False),
        ("BEGIN", K.TRANSACTION, "BEGIN", False, False, False, False),
        ("PREPARE TRANSACTION 'x'", K.TRANSACTION, "PREPARE", False, False, False, False),
        ("SET x = 1", K.SESSION, "SET", False, False, False, False),
        ("SELEC 1", K.UNKNOWN, "SELEC", False, True, False, False),
    ],
)
def test_classify(
    sql: str, kind: StatementKind, main: str, returns_rows: bool, writes: bool, has_returning: bool, wrappable: bool
) -> None:
    c = classify(sql)
    assert (c.kind, c.main_keyword, c.returns_rows, c.writes, c.has_returning, c.wrappable) == (
        kind,
        main,
        returns_rows,
        writes,
        has_returning,
        wrappable,
    )


def test_classify_reports_the_first_keyword_and_the_first_statement() -> None:
    c = classify("/* c */ WITH x AS (SELECT 1) SELECT * FROM x; DELETE FROM t")
    assert c == Classified(StatementKind.QUERY, "WITH", "SELECT", True, False, False, True)
    assert classify("(SELECT 1)").first_keyword == "SELECT"
    assert classify("").kind is StatementKind.UNKNOWN


# --------------------------------------------------------------------------------------------------
# Refusals (both tools, readers and writers)

TRANSACTION_CONTROL = [
    "BEGIN",
    "begin",
    "BeGiN",
    "/* x */ BEGIN",
    "-- c\nBEGIN;",
    "BEGIN ISOLATION LEVEL SERIALIZABLE",
    "BEGIN WORK",
    "START TRANSACTION",
    "start transaction read write",
    "COMMIT",
    "commit and chain",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT s",
    "RELEASE SAVEPOINT s",
    "RELEASE s",
    "ROLLBACK TO SAVEPOINT s",
    "PREPARE TRANSACTION 'x'",
    "COMMIT PREPARED 'x'",
    "ROLLBACK PREPARED 'x'",
]


@pytest.mark.parametrize("sql", TRANSACTION_CONTROL)
@pytest.mark.parametrize("read_only", [False, True])
def test_transaction_control_is_refused_in_both_tools(sql: str, read_only: bool) -> None:
    in_run_sql, in_transaction = refused_both(sql, read_only=read_only)
    assert in_run_sql.reason == in_transaction.reason == "transaction_control"
    assert "each tool call is its own transaction" in in_run_sql.message
    assert "run_sql_transaction" in in_run_sql.message
    assert "already run in one transaction" in in_transaction.message
    assert in_transaction.message.startswith("statement 2: ")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SET statement_timeout = 0", "session"),
        ("set/**/statement_timeout=0", "session"),
        ("SET\tstatement_timeout\n=\n0", "session"),
        ('  SET "statement_timeout" = 0', "session"),
        ("SET LOCAL statement_timeout = 0", "session"),
        ("SET SESSION statement_timeout TO 0", "session"),
        ("set search_path to public", "session"),
        ("SET TIME ZONE 'UTC'", "session"),
        ("SET TRANSACTION READ WRITE", "session"),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "session"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "session"),
        ("SET standard_conforming_strings = off", "session"),
        ("RESET ALL", "session"),
        ("reset statement_timeout", "session"),
        ("DISCARD ALL", "session"),
        ("discard plans", "session"),
        ("SET ROLE postgres", "role_change"),
        ("SET ROLE NONE", "role_change"),
        ("set local role postgres", "role_change"),
        ("SET SESSION ROLE postgres", "role_change"),
        ("SET SESSION AUTHORIZATION postgres", "role_change"),
        ("SET SESSION AUTHORIZATION DEFAULT", "role_change"),
        ("RESET ROLE", "role_change"),
        ("RESET SESSION AUTHORIZATION", "role_change"),
    ],
)
def test_session_and_role_changes_are_refused(sql: str, reason: str) -> None:
    for exc in refused_both(sql) + refused_both(sql, read_only=True):
        assert exc.reason == reason
        assert "not allowed" in exc.message


def test_set_messages_say_what_to_do() -> None:
    message = refused_run_sql("SET search_path = app").message
    assert "search_path" in message and "schema-qualify" in message
    assert "role" in refused_run_sql("SET ROLE x").message.lower()


SET_CONFIG_CALLS = [
    "select pg_catalog.set_config('statement_timeout','0',false)",
    "SELECT \"set_config\"('a','b',false)",
    "SELECT set_config  ('x','y',true)",
    "SELECT SET_CONFIG('x','y',true)",
    "SELECT \"pg_catalog\".\"set_config\"('a','b',false)",
    "SELECT pg_catalog . set_config /* c */ ('a','b',false)",
    "SELECT set_config\n-- c\n('a','b',false)",
    "SELECT * FROM t WHERE set_config('a','b',true) IS NOT NULL",
    "SELECT * FROM set_config('a','b',true)",
    "SELECT U&\"set\\005fconfig\"('a','b',false)",
    "SELECT U&\"set!005fconfig\" UESCAPE '!' ('a','b',false)",
    "SELECT (SELECT set_config('role', 'x', false))",
    "INSERT INTO t SELECT set_config('a','b',false)",
    "UPDATE t SET x = set_config('a','b',false)",
    "WITH x AS (SELECT set_config('a','b',false)) SELECT * FROM x",
    "EXPLAIN ANALYZE SELECT set_config('a','b',false)",
    "CREATE VIEW v AS SELECT set_config('a','b',false)",
    "CREATE TABLE t (x text DEFAULT set_config('a','b',false))",
    "CREATE INDEX ON t ((set_config('a', b, false)))",
    "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
    "update pg_catalog.pg_settings set setting = '0'",
    "UPDATE ONLY \"pg_settings\" SET setting = '0'",
    "WITH x AS (UPDATE pg_settings SET setting = '0' RETURNING *) SELECT 1",
    "CREATE AGGREGATE agg(text, boolean) (SFUNC = set_config, STYPE = text)",
    "CREATE AGGREGATE agg(text, boolean) (SFUNC = pg_catalog.set_config, STYPE = text)",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT set_config('a', 'b', false) $$",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT set_config(''a'', ''b'', false)'",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT set_con'\n'fig(''a'', ''b'', false)'",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$ BEGIN EXECUTE 'SELECT set_config(''a'', ''b'', false)'; "
    "END $f$",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN SET ROLE postgres; END $$",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS 'BEGIN RESET ALL; END'",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN IF true THEN SET statement_timeout = 0; END IF; "
    "END $$",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT set_config('a','b',false); END",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SET ROLE postgres; END",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET statement_timeout = 0 AS 'SELECT 1'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET role TO postgres AS 'SELECT 1'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET \"transaction_read_only\" = off AS 'SELECT 1'",
    "CREATE PROCEDURE p() LANGUAGE sql SET search_path = public SET lock_timeout = 0 AS 'SELECT 1'",
    "ALTER FUNCTION f() SET role = postgres",
    "ALTER ROUTINE f SET idle_in_transaction_session_timeout = 0",
]


@pytest.mark.parametrize("sql", SET_CONFIG_CALLS)
def test_session_settings_cannot_be_changed_by_other_routes(sql: str) -> None:
    for exc in refused_both(sql):
        assert exc.reason in ("function", "session", "role_change")


ADMINISTRATION = [
    "ALTER SYSTEM SET x = 1",
    "alter system reset all",
    "LOAD 'x'",
    "load '$libdir/plugins/x'",
    "COPY t TO PROGRAM 'id'",
    "COPY t FROM PROGRAM 'id'",
    "copy (select 1) to '/tmp/x'",
    "COPY t FROM '/etc/passwd'",
    "COPY t TO 'stdout'",
    "COPY t (a, b) FROM '/x' WITH (FORMAT csv)",
    "COPY BINARY t TO '/tmp/x'",
    "CREATE EXTENSION dblink",
    "create extension if not exists pg_stat_statements",
    "ALTER EXTENSION x UPDATE",
    "DROP EXTENSION x",
    "DO $$ BEGIN PERFORM 1; END $$",
    "do 'begin null; end'",
    "DO LANGUAGE plpgsql $$ BEGIN END $$",
    "CREATE ROLE x",
    "CREATE USER x WITH SUPERUSER PASSWORD 'p'",
    "ALTER ROLE x SUPERUSER",
    "ALTER ROLE CURRENT_USER SET statement_timeout = 0",
    "ALTER USER x SET search_path = y",
    "DROP ROLE x",
    "DROP USER IF EXISTS x",
    "CREATE GROUP g",
    "ALTER GROUP g ADD USER u",
    "DROP GROUP g",
    "GRANT postgres TO tenant",
    "GRANT pg_read_server_files TO CURRENT_USER",
    "GRANT admin TO tenant WITH ADMIN OPTION",
    "REVOKE admin FROM tenant",
    "GRANT CONNECT ON DATABASE d TO PUBLIC",
    "GRANT CREATE ON TABLESPACE ts TO x",
    "GRANT USAGE ON FOREIGN SERVER s TO x",
    "GRANT USAGE ON LANGUAGE plpgsql TO x",
    "GRANT SET ON PARAMETER work_mem TO x",
    "REVOKE ALL ON DATABASE d FROM PUBLIC",
    "CREATE DATABASE d",
    "DROP DATABASE d",
    "ALTER DATABASE d SET statement_timeout = 0",
    "CREATE TABLESPACE ts LOCATION '/x'",
    "ALTER TABLESPACE ts RENAME TO y",
    "DROP TABLESPACE ts",
    "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p",
    "DROP SUBSCRIPTION s",
    "CREATE PUBLICATION p FOR ALL TABLES",
    "ALTER PUBLICATION p ADD TABLE t",
    "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'x')",
    "CREATE FOREIGN DATA WRAPPER w",
    "CREATE FOREIGN TABLE ft (a int) SERVER s",
    "CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (user 'u')",
    "DROP USER MAPPING FOR x SERVER s",
    "IMPORT FOREIGN SCHEMA public FROM SERVER s INTO x",
    "SECURITY LABEL ON TABLE t IS 'x'",
    "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
    "CREATE OR REPLACE TRUSTED LANGUAGE plx HANDLER h",
    "DROP LANGUAGE plpgsql",
    "REASSIGN OWNED BY a TO b",
    "DROP OWNED BY a",
    "VACUUM",
    "VACUUM FULL t",
    "vacuum analyze t",
    "CHECKPOINT",
    "LISTEN ch",
    "UNLISTEN *",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DEALLOCATE ALL",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "declare c no scroll cursor with hold for select 1",
    "EXPLAIN EXECUTE p",
    "EXPLAIN ANALYZE EXECUTE p(1)",
]


@pytest.mark.parametrize("sql", ADMINISTRATION)
def test_server_administration_and_session_state_are_refused(sql: str) -> None:
    for exc in refused_both(sql):
        assert exc.reason in ("admin", "role_change", "session_state", "session")
        assert "not" in exc.message


def test_copy_messages_distinguish_program_and_file() -> None:
    assert "shell command" in refused_run_sql("COPY t TO PROGRAM 'id'").message
    assert "server file" in refused_run_sql("COPY t FROM '/etc/passwd'").message
    assert "foreign" in refused_run_sql("CREATE USER MAPPING FOR x SERVER s").message
    assert "DO blocks" in refused_run_sql("DO $$ BEGIN END $$").message


OUTSIDE_FUNCTIONS = [
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT pg_ls_waldir()",
    "SELECT pg_stat_file('x')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '/tmp/x')",
    "SELECT dblink('host=x', 'select 1')",
    "SELECT dblink_exec('x', 'y')",
    "SELECT * FROM dblink_connect('x')",
    "SELECT pg_terminate_backend(1)",
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity",
    "SELECT pg_reload_conf()",
    "SELECT pg_rotate_logfile()",
    "SELECT pg_promote()",
    "SELECT pg_file_write('x', 'y', false)",
    "SELECT pg_create_logical_replication_slot('s', 'p')",
    "SELECT pg_replication_origin_create('x')",
    "SELECT PG_READ_FILE('x')",
    "SELECT \"pg_read_file\"('x')",
    "SELECT pg_catalog.pg_read_file ( 'x' )",
    "SELECT 1pg_read_file('x')",
    "SELECT x FROM t WHERE length(pg_read_file('x')) > 0",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock_shared(1)",
    "SELECT pg_advisory_unlock_all()",
    "SELECT query_to_xml('select 1', true, true, '')",
    "CREATE CAST (text AS mytype) WITH FUNCTION pg_read_file(text)",
]


@pytest.mark.parametrize("sql", OUTSIDE_FUNCTIONS)
def test_functions_reaching_outside_the_database_are_refused(sql: str) -> None:
    for exc in refused_both(sql) + refused_both(sql, read_only=True):
        assert exc.reason == "function"
        assert "()" in exc.message


def test_advisory_lock_message_points_to_the_transaction_level_variant() -> None:
    assert "pg_advisory_xact_lock" in refused_run_sql("SELECT pg_advisory_lock(1)").message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT (1",
        "SELECT 1)",
        "SELECT 1) q; SELECT (1",
        "SELECT * FROM (SELECT 1",
    ],
)
def test_unbalanced_parentheses_are_refused(sql: str) -> None:
    with pytest.raises(SqlRefused):
        check_statement(sql.split(";")[0], read_only=False, in_transaction_tool=False)
    assert refused_run_sql(sql).reason in ("syntax", "statement_count")


@pytest.mark.parametrize("sql", ["SELEC 1", "'x'", "1 + 1", "foo bar", "RETURN 1"])
def test_unrecognised_statements_are_refused(sql: str) -> None:
    exc = refused_run_sql(sql)
    assert exc.reason == "syntax"
    assert "not a recognised SQL statement" in exc.message


# --------------------------------------------------------------------------------------------------
# Read-only

WRITES = [
    "INSERT INTO t VALUES (1)",
    "insert into t select 1 returning *",
    "UPDATE t SET x = 1",
    "DELETE FROM t",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    "CREATE TABLE t (id int)",
    "CREATE TEMP TABLE x (a int)",
    "DROP TABLE t",
    "TRUNCATE t",
    "ALTER TABLE t ADD COLUMN y int",
    "CREATE INDEX ON t (x)",
    "COMMENT ON TABLE t IS 'x'",
    "GRANT SELECT ON t TO x",
    "REFRESH MATERIALIZED VIEW v",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "with u as (update t set x = 1 returning *) select 1",
    "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
    "WITH a AS (SELECT 1), b AS (INSERT INTO t VALUES (1) RETURNING *) TABLE b",
    "(WITH m AS (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE) SELECT 1)",
    "SELECT * INTO t2 FROM t",
    "EXPLAIN ANALYZE DELETE FROM t",
    "EXPLAIN (ANALYZE, BUFFERS) INSERT INTO t VALUES (1)",
    "EXPLAIN (ANALYZE true) UPDATE t SET x = 1",
    "EXPLAIN ANALYZE SELECT * INTO t2 FROM t",
    "EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "COPY t FROM STDIN",
    "COPY t TO STDOUT",
    "CALL p()",
    "LOCK TABLE t",
    "NOTIFY ch",
    "ANALYZE t",
    "SET CONSTRAINTS ALL DEFERRED",
    "DECLARE c CURSOR FOR SELECT 1",
]


@pytest.mark.parametrize("sql", WRITES)
def test_read_only_refuses_anything_but_queries_explain_and_show(sql: str) -> None:
    for exc in refused_both(sql, read_only=True):
        assert exc.reason == "read_only"
        assert "read-only" in exc.message
    check_run_sql(sql, read_only=False)  # allowed for writers
    check_transaction([sql], read_only=False)


def test_read_only_messages_are_specific() -> None:
    assert "EXPLAIN without ANALYZE" in refused_run_sql("EXPLAIN ANALYZE DELETE FROM t", read_only=True).message
    assert "data-modifying" in refused_run_sql("WITH d AS (DELETE FROM t) SELECT 1", read_only=True).message
    assert "INSERT is not allowed" in refused_run_sql("INSERT INTO t VALUES (1)", read_only=True).message


READS = [
    "SELECT 1",
    "select * from t where name = 'DELETE FROM t'",
    "SELECT '; DROP TABLE t; --'",
    'SELECT "insert", "update" FROM t',
    "SELECT t.update, t.delete FROM t",
    "SELECT x AS insert FROM t",
    "SELECT 1 -- DELETE FROM t",
    "SELECT 1 /* INSERT INTO t VALUES (1) */",
    "SELECT * FROM update_log",
    "SELECT * FROM t WHERE note = $$ INSERT INTO x $$",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t",
    "VALUES (1)",
    "TABLE t",
    "(SELECT 1)",
    "(SELECT 1) UNION ALL (SELECT 2) ORDER BY 1",
    "EXPLAIN SELECT 1",
    "EXPLAIN DELETE FROM t",
    "EXPLAIN (ANALYZE false) DELETE FROM t",
    "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN (ANALYZE, FORMAT JSON) WITH x AS (SELECT 1) SELECT * FROM x",
    "SHOW search_path",
    "SHOW ALL",
    "SELECT pg_sleep(1)",
    "SELECT * FROM generate_series(1, 10)",
    "SELECT current_setting('statement_timeout')",
    "SELECT * FROM pg_catalog.pg_tables WHERE schemaname = 'public'",
    "SELECT * FROM pg_settings",
    "SELECT table_name FROM information_schema.tables",
    "SELECT $1",
    "SELECT E'\\n'",
]


@pytest.mark.parametrize("sql", READS)
def test_read_only_allows_queries_explain_and_show(sql: str) -> None:
    (statement,) = split_statements(sql)  # without a trailing comment
    assert check_run_sql(sql, read_only=True) == statement
    assert check_transaction([sql, sql], read_only=True) == [statement, statement]
    check_statement(sql, read_only=True, in_transaction_tool=False)


# --------------------------------------------------------------------------------------------------
# Legitimate SQL (writers)

LEGITIMATE = [
    "SELECT 'BEGIN; COMMIT'",
    "INSERT INTO t VALUES ('set_config(')",
    'SELECT "set"',
    'SELECT "set_config" FROM t',
    "CREATE TABLE settings (id int, value text)",
    "SELECT * FROM reset_log",
    "SELECT * FROM begin_events",
    "UPDATE t SET x = 1",
    "update t set x = 1 where id = 2",
    "UPDATE users SET role = 'admin' WHERE id = 1",
    "SELECT * FROM t WHERE role = 'admin'",
    "SELECT 'SET ROLE postgres'",
    "SELECT 1 /* SET ROLE x; */",
    "SELECT 1 -- ; COMMIT",
    r"INSERT INTO notes (body) VALUES (E'it\'s a SET; COMMIT')",
    "SELECT $$ ; BEGIN; $$",
    "SELECT $q$ pg_read_file('x') $q$",
    "SELECT 'pg_read_file(''/etc/passwd'')'",
    "COMMENT ON TABLE t IS 'do not DROP; ROLLBACK'",
    "SELECT set_config_value FROM cfg",
    "SELECT t.set_config FROM t",
    "ALTER TABLE t ALTER COLUMN c SET DEFAULT 0",
    "ALTER TABLE t SET (fillfactor = 70)",
    "ALTER TABLE t RESET (fillfactor)",
    "ALTER TABLE t OWNER TO CURRENT_USER",
    "CREATE TABLE dblink_log (id int PRIMARY KEY)",
    "INSERT INTO dblink_log (id) VALUES (1)",
    "CREATE INDEX ON dblink_log (id)",
    "CREATE TABLE t (id int REFERENCES dblink_log (id))",
    "COPY dblink_log (id) FROM STDIN",
    "DROP TABLE t",
    "DROP TABLE IF EXISTS t CASCADE",
    "TRUNCATE t",
    "CREATE INDEX t_idx ON t (lower(name))",
    "CREATE UNIQUE INDEX CONCURRENTLY t_idx ON t (x)",
    "CREATE VIEW v AS SELECT * FROM t",
    "CREATE MATERIALIZED VIEW mv AS SELECT 1",
    "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql AS $$ SELECT a + b $$",
    "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $body$\nBEGIN\n  NEW.updated_at := now();\n"
    "  RETURN NEW;\nEND\n$body$",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = public AS 'SELECT 1'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET work_mem = '64MB' SET enable_seqscan = off AS 'SELECT 1'",
    "ALTER FUNCTION f() SET search_path = public, pg_temp",
    "ALTER FUNCTION f() SET SCHEMA app",
    "ALTER FUNCTION f() RESET ALL",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT (CASE WHEN true THEN 1 END); END",
    "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); UPDATE t SET x = 2; END",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT 'reset'; END",
    "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql RETURN x + 1",
    "CREATE FUNCTION f(note text DEFAULT 'reset') RETURNS text LANGUAGE sql AS $$ SELECT note $$",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  UPDATE t SET x = 1;\n"
    "  RAISE NOTICE 'reset done';\nEND\n$$",
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT 'BEGIN; COMMIT' $$",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.1); END $$",
    "CREATE TRIGGER trg BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION touch()",
    "CREATE AGGREGATE my_sum(int) (SFUNC = int4pl, STYPE = int)",
    "GRANT SELECT ON t TO PUBLIC",
    "GRANT SELECT, UPDATE (x) ON TABLE t TO someone",
    "REVOKE INSERT ON t FROM PUBLIC",
    "GRANT USAGE ON SCHEMA s TO x",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO x",
    "SELECT pg_sleep(1)",
    "SELECT pg_sleep_for('1 second')",
    "SELECT * FROM generate_series(1, 3)",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_notify('ch', 'x')",
    "NOTIFY ch, 'payload'",
    "EXPLAIN SELECT 1",
    "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN ANALYZE DELETE FROM t",
    "SHOW search_path",
    "COPY t TO STDOUT",
    "COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)",
    "COPY t (a, b) FROM STDIN",
    "CALL p(1)",
    "LOCK TABLE t IN SHARE MODE",
    "ANALYZE t",
    "ANALYZE t (a)",
    "CLUSTER t USING t_idx",
    "REINDEX TABLE t",
    "SET CONSTRAINTS ALL DEFERRED",
    "DECLARE c CURSOR FOR SELECT 1",
    "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
    "FETCH 10 FROM c",
    "CLOSE c",
    "CREATE TEMP TABLE scratch (a int) ON COMMIT DROP",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET x = s.x "
    "WHEN NOT MATCHED THEN INSERT (id, x) VALUES (s.id, s.x)",
    "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = excluded.x RETURNING *",
    "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY, note text DEFAULT 'SET ROLE x')",
    "CREATE SCHEMA app",
    "CREATE TYPE mood AS ENUM ('sad', 'ok')",
    'CREATE TABLE "Users" ("userId" int, "createdAt" timestamptz)',
    'SELECT "userId" FROM "Users" WHERE "createdAt" > now() - interval \'1 day\'',
    "SELECT data->>'name', data #>> '{a,b}' FROM docs WHERE data @> '{\"x\": 1}'",
    "SELECT U&\"d!0061ta\" UESCAPE '!' FROM t",
    "WITH x AS (SELECT 1) SELECT * FROM x",
]


@pytest.mark.parametrize("sql", LEGITIMATE)
def test_legitimate_sql_is_allowed_for_writers(sql: str) -> None:
    (statement,) = split_statements(sql)  # without a trailing comment
    assert check_run_sql(sql, read_only=False) == statement
    assert check_transaction([sql], read_only=False) == [statement]
    check_statement(sql, read_only=False, in_transaction_tool=True)


# --------------------------------------------------------------------------------------------------
# run_sql


@pytest.mark.parametrize("sql", ["", "   ", ";", ";;", "-- c", "/* c */ ;"])
def test_run_sql_refuses_empty_sql(sql: str) -> None:
    exc = refused_run_sql(sql)
    assert exc.reason == "statement_count"
    assert "empty SQL" in exc.message


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1; SELECT 2", "COMMIT; DROP TABLE t", "SELECT 1; BEGIN", "select 1;select 2;", "SELECT 'a'; ; SELECT 'b'"],
)
def test_run_sql_runs_exactly_one_statement(sql: str) -> None:
    exc = refused_run_sql(sql)
    assert exc.reason == "statement_count"
    assert "exactly one statement" in exc.message
    assert "run_sql_transaction" in exc.message


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("  SELECT 1 ;  -- done", "SELECT 1"),
        ("SELECT 1 -- trailing comment", "SELECT 1"),
        ("SELECT 1 /* trailing */", "SELECT 1"),
        ("/*+ hint */ SELECT 1;", "/*+ hint */ SELECT 1"),
        ("-- leading\nSELECT 1", "-- leading\nSELECT 1"),
        ("\n\tSELECT\n  1\n;\n", "SELECT\n  1"),
        ("INSERT INTO t VALUES (1) RETURNING id;", "INSERT INTO t VALUES (1) RETURNING id"),
        ("SELECT 'x;' ; ;", "SELECT 'x;'"),
    ],
)
def test_run_sql_returns_the_statement_ready_to_wrap(sql: str, expected: str) -> None:
    assert check_run_sql(sql, read_only=False) == expected


def test_length_limit() -> None:
    at_limit = "SELECT 1" + " " * (MAX_STATEMENT_CHARS - len("SELECT 1"))
    assert check_run_sql(at_limit, read_only=True) == "SELECT 1"
    too_long = at_limit + " "
    assert refused_run_sql(too_long).reason == "too_long"
    assert refused_transaction([too_long]).reason == "too_long"
    with pytest.raises(SqlRefused):
        check_statement(too_long, read_only=False, in_transaction_tool=False)
    huge = "SELECT '" + "x" * 60_000 + "'"
    assert refused_transaction([huge] * 20).reason == "too_long"  # the whole transaction is capped too


def test_run_sql_refuses_non_strings() -> None:
    assert refused_run_sql(None).reason == "invalid"  # type: ignore[arg-type]


def test_check_statement_wants_exactly_one_statement() -> None:
    check_statement("SELECT 1;", read_only=True, in_transaction_tool=False)
    for sql in ("SELECT 1; SELECT 2", ""):
        with pytest.raises(SqlRefused) as info:
            check_statement(sql, read_only=True, in_transaction_tool=False)
        assert info.value.reason == "statement_count"


# --------------------------------------------------------------------------------------------------
# run_sql_transaction


def test_check_transaction_returns_cleaned_statements() -> None:
    statements = ["INSERT INTO t VALUES (1);", "  UPDATE t SET x = 2 -- why", "/* c */ DELETE FROM t WHERE x = 3"]
    assert check_transaction(statements, read_only=False) == [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET x = 2",
        "/* c */ DELETE FROM t WHERE x = 3",
    ]


def test_each_element_must_be_exactly_one_statement() -> None:
    exc = refused_transaction(["SELECT 1", "INSERT INTO t VALUES (1); COMMIT"])
    assert exc.reason == "statement_count"
    assert exc.message.startswith("statement 2: ")
    assert "its own array element" in exc.message
    exc = refused_transaction(["SELECT 1", "  ; -- nothing"])
    assert exc.message.startswith("statement 2: ")
    assert "empty" in exc.message


def test_transaction_statement_count_limit() -> None:
    assert len(check_transaction(["SELECT 1"] * MAX_TRANSACTION_STATEMENTS, read_only=True)) == 100
    assert MAX_TRANSACTION_STATEMENTS == 100
    exc = refused_transaction(["SELECT 1"] * (MAX_TRANSACTION_STATEMENTS + 1))
    assert exc.reason == "statement_count"
    assert "at most 100" in exc.message


@pytest.mark.parametrize("statements", [[], None, "SELECT 1", ["SELECT 1", 2]])
def test_transaction_input_shape(statements: object) -> None:
    with pytest.raises(SqlRefused):
        check_transaction(statements, read_only=False)  # type: ignore[arg-type]


def test_transaction_refusals_name_the_element() -> None:
    exc = refused_transaction(["SELECT 1", "SELECT 2", "SET ROLE x"])
    assert exc.message.startswith("statement 3: ")
    exc = refused_transaction(["SELECT 1", "DELETE FROM t"], read_only=True)
    assert exc.message.startswith("statement 2: ")
    assert exc.reason == "read_only"


# --------------------------------------------------------------------------------------------------
# Fast path and token path agree


def _token_path(sql: str) -> tuple[str, Classified]:
    pieces = sqlguard._split(sql, sqlguard._lex(sql))
    assert len(pieces) == 1, sql
    text, toks = pieces[0]
    return text, sqlguard._check(toks, read_only=False, in_transaction_tool=False)


def _assert_paths_agree(sql: str) -> bool:
    fast = sqlguard._fast(sql)
    if fast is None:
        return False
    assert _token_path(sql) == fast, sql
    return True


def test_fast_path_covers_every_refused_function() -> None:
    names = list(sqlguard._FUNCTIONS) + list(sqlguard._OUTSIDE_PREFIXES)
    for name in names:
        assert name.startswith("PG_") or any(f in name for f in sqlguard._FUNCTION_FILTER), name


def test_fast_path_takes_the_common_statements() -> None:
    common = [
        "SELECT o.id, sum(l.amount) AS total FROM orders o JOIN lines l ON l.order_id = o.id "
        "WHERE o.created_at > now() - interval '7 days' GROUP BY 1 ORDER BY total DESC LIMIT 50;",
        'SELECT "userId" FROM "Users" -- the users\nWHERE "createdAt" > now()',
        "WITH a AS (SELECT 1 AS x), b (y) AS MATERIALIZED (SELECT x FROM a) SELECT * FROM b",
        "INSERT INTO t (a, b) VALUES (1, 'x''y')",
        "UPDATE t SET x = 1 WHERE id = 2",
        "DELETE FROM t WHERE id = 3",
        "SHOW search_path",
        "SELECT * FROM pg_catalog.pg_tables",
    ]
    for sql in common:
        assert _assert_paths_agree(sql), sql


@pytest.mark.parametrize("sql", READS + LEGITIMATE + WRITES)
def test_fast_path_agrees_with_the_token_path(sql: str) -> None:
    _assert_paths_agree(sql)


def test_fast_path_never_accepts_what_the_token_path_would_not() -> None:
    base = [
        "SELECT o.id, sum(l.amount) AS total FROM orders o JOIN lines l ON l.order_id = o.id GROUP BY 1",
        "WITH a AS (SELECT 1 AS x), b (y) AS MATERIALIZED (SELECT x FROM a) SELECT * FROM b",
        "INSERT INTO t (a, b) VALUES (1, 'x''y'), (2, \"q\")",
        "UPDATE t SET x = 1 WHERE id = 2",
        "SELECT x FROM t WHERE a = 'it''s' AND b = \"c\"\"d\" -- c",
        "(SELECT 1) UNION (SELECT 2)",
        "SHOW search_path",
    ]
    inserts = ["'", '"', "(", ")", ";", " ", "--", "/*", "*/", "\n", "E", "U&", "$", "$$", "\\", "&", "1"]
    inserts += ["INTO", "SET", "pg_read_file(", "set_config(", "RETURNING", "é", "\x00", "pg_settings"]
    rng = random.Random(7)
    accepted = 0
    for _ in range(1500):
        sql = rng.choice(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(sql))
            sql = sql[:at] + rng.choice(inserts) + sql[at:]
        fast = sqlguard._fast(sql)
        if fast is None:
            continue
        accepted += 1
        try:
            assert _token_path(sql) == fast, sql
        except SqlRefused as exc:  # pragma: no cover - a failure report
            pytest.fail(f"fast path accepted {sql!r}, token path refused: {exc.message}")
    assert accepted > 100


# --------------------------------------------------------------------------------------------------
# Adversarial input stays linear and never leaks another exception


def _adversarial_inputs() -> dict[str, str]:
    m = MAX_STATEMENT_CHARS - 1000
    return {
        "a long word before PG_": "SELECT " + "A" * (m // 2) + " PG_",
        "deep parentheses": "SELECT " + "(" * (m // 2 - 10) + "1" + ")" * (m // 2 - 10),
        "many continued strings": "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS " + "'aaaaaaaa'\n" * (m // 11 - 10),
        "many semicolons": "SELECT 1" + ";" * (m - 20),
        "EXPLAIN chain": "EXPLAIN " * (m // 8 - 5) + "SELECT 1",
        "nested BEGIN ATOMIC": "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC " * (m // 60)
        + "SELECT 1; END",
        "many statements": "SELECT 1;" * (m // 9 - 1),
        "many unterminated E strings": "SELECT " + "E'\\'" * (m // 4 - 5),
        "many CTEs": "WITH " + ",".join(f"c{i} AS (SELECT 1)" for i in range(m // 25)) + " SELECT 1",
        "nested comment openers": "SELECT 1 /*" + "/*" * (m // 4) + "*/" * (m // 4),
        "a long qualified name": "SELECT " + "a." * (m // 2 - 20) + "set_config(1)",
    }


@pytest.mark.parametrize("name", list(_adversarial_inputs()))
def test_adversarial_input_is_handled_quickly(name: str) -> None:
    import time

    sql = _adversarial_inputs()[name]
    assert len(sql) <= MAX_STATEMENT_CHARS
    started = time.perf_counter()
    for call in (
        lambda: check_run_sql(sql, read_only=False),
        lambda: check_transaction([sql], read_only=True),
        lambda: classify(sql),
    ):
        with contextlib.suppress(SqlRefused):
            call()
    assert time.perf_counter() - started < 10, "quadratic behaviour?"
