"""The explorer's SQL building and cursors, without a database: quoting, literals, cursor checks."""

from __future__ import annotations

import base64
import json
import re

import pytest

from agentdb.errors import InvalidInput
from agentdb.explorer.models import QueryRequest
from agentdb.explorer.sql import (
    Column,
    Cursor,
    Relation,
    choose_order,
    decode_cursor,
    describe_sql,
    literal,
    quote_ident,
    select_page,
)
from agentdb.tools import sqlguard


def col(name: str, *, pk: int = 0, not_null: bool = True, orderable: bool = True, type_: str = "integer") -> Column:
    return Column(name, type_, type_, not_null or pk > 0, pk, orderable)


ITEMS = Relation("public", "items", (col("id", pk=1), col("label", type_="text"), col("note", not_null=False)))


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("t", '"t"'), ('t"; DROP TABLE x; --', '"t""; DROP TABLE x; --"'), ("a.b", '"a.b"'), ("名前", '"名前"')],
)
def test_quote_ident_doubles_quotes(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


@pytest.mark.parametrize("name", ["", "a\x00b"])
def test_quote_ident_refuses_empty_and_nul(name: str) -> None:
    with pytest.raises(InvalidInput):
        quote_ident(name)


@pytest.mark.parametrize("value", ["", "x", "$", "$$", "$q$", "a$q0$b", "end$", "'; DROP TABLE x; --", "\\"])
def test_literal_is_one_token_holding_the_value(value: str) -> None:
    text = literal(value)
    match = re.match(r"^(\$q[0-9a-f]{12}\$)", text)
    assert match and text.endswith(match.group(1))
    delimiter = match.group(1)
    assert text[len(delimiter) : -len(delimiter)] == value
    assert text.find(delimiter, len(delimiter)) == len(text) - len(delimiter)  # nothing closes it early
    # The guard's lexer sees one complete statement, whatever the value.
    assert sqlguard.check_run_sql(f"SELECT {text} AS v", read_only=True)


def test_literal_draws_another_tag_when_the_value_contains_one(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr("agentdb.explorer.sql.secrets.token_hex", lambda _: next(draws))
    assert literal("x$qaaaaaaaaaaaa$y") == "$qbbbbbbbbbbbb$x$qaaaaaaaaaaaa$y$qbbbbbbbbbbbb$"


def test_literal_refuses_nul() -> None:
    with pytest.raises(InvalidInput):
        literal("a\x00")


def test_describe_sql_holds_names_only_as_literals() -> None:
    statement = describe_sql('t"; DROP TABLE x; --', "s'; DROP")
    assert sqlguard.check_run_sql(statement, read_only=True) == statement
    assert "DROP TABLE x; --$" in statement and "s'; DROP$" in statement


def test_default_order_is_the_primary_key_then_keyset() -> None:
    order = choose_order(ITEMS, None, "asc")
    assert [k.name for k in order.keys] == ["id"] and order.keyset
    by_label = choose_order(ITEMS, "label", "desc")
    assert [k.name for k in by_label.keys] == ["label", "id"] and by_label.keyset
    by_note = choose_order(ITEMS, "note", "asc")
    assert by_note.keyset is False  # nullable: offset cursors
    with pytest.raises(InvalidInput):
        choose_order(ITEMS, "missing", "asc")


def test_without_a_primary_key_every_orderable_column_orders_with_offsets() -> None:
    heap = Relation("public", "heap", (col("a"), col("doc", orderable=False, type_="json"), col("b")))
    order = choose_order(heap, None, "asc")
    assert [k.name for k in order.keys] == ["a", "b"] and not order.keyset
    with pytest.raises(InvalidInput, match="no ordering"):
        choose_order(heap, "doc", "asc")


def test_relation_from_a_catalog_row_parsed_or_as_json_text() -> None:
    row = [["id", "integer", "integer", True, 1, True], ["doc", "json", "json", False, 0, False]]
    parsed = Relation.from_row("public", "t", row)
    assert parsed == Relation.from_row("public", "t", json.dumps(row))
    assert [c.name for c in parsed.primary_key] == ["id"] and parsed.column("doc") == Column(
        "doc", "json", "json", False, 0, False
    )


def test_select_page_quotes_everything_and_fetches_one_more_row() -> None:
    weird = Relation('s"x', 't"; DROP', (col('i"d', pk=1), col("_cursor_0", type_="text")))
    order = choose_order(weird, None, "desc")
    select = select_page(weird, order, limit=10, offset=0, after=("5",))
    assert select.key_aliases == ("__cursor_0",)  # clear of the table's own column names
    assert select.sql.startswith('SELECT "i""d", "_cursor_0", ("i""d")::text AS "__cursor_0" FROM "s""x"."t""; DROP"')
    assert re.search(r'WHERE \("i""d"\) < \(CAST\(\$q[0-9a-f]{12}\$5\$q[0-9a-f]{12}\$ AS integer\)\)', select.sql)
    assert select.sql.endswith('ORDER BY "i""d" DESC LIMIT 11')
    assert sqlguard.check_run_sql(select.sql, read_only=True) == select.sql


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (1001, 0), (10, -1)])
def test_select_page_refuses_out_of_range_numbers(limit: int, offset: int) -> None:
    with pytest.raises(InvalidInput):
        select_page(ITEMS, choose_order(ITEMS, None, "asc"), limit=limit, offset=offset, after=None)


def test_cursor_round_trip_and_binding_to_its_query() -> None:
    order = choose_order(ITEMS, None, "asc")
    keyset = Cursor(order.fingerprint(ITEMS), values=("41",)).encode()
    assert decode_cursor(keyset, order, ITEMS).values == ("41",)
    offset = Cursor(order.fingerprint(ITEMS), offset=300).encode()
    assert decode_cursor(offset, order, ITEMS).offset == 300
    other_order = choose_order(ITEMS, None, "desc")
    other_table = Relation("public", "other", ITEMS.columns)
    for order_, relation in ((other_order, ITEMS), (order, other_table)):
        with pytest.raises(InvalidInput) as caught:
            decode_cursor(keyset, order_, relation)
        assert "cursor is not valid" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        "@@@",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b'{"v": 2}').decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 1, "f": "x", "k": ["1"]}).encode()).decode(),
        "A" * 20_000,
        base64.urlsafe_b64encode(b"[" * 10_000).decode(),  # nesting deeper than the JSON parser's recursion
    ],
)
def test_garbage_cursors_are_invalid(body: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(body, choose_order(ITEMS, None, "asc"), ITEMS)


def test_query_request_validation() -> None:
    assert QueryRequest.model_validate({"table": "t"}).limit == 100
    assert QueryRequest.model_validate({"table": "t", "schema": "s"}).schema_ == "s"
    for bad in (
        {"table": "t", "limit": 1001},
        {"table": "t", "limit": "5"},
        {"table": "t", "limit": True},
        {"table": "t", "offset": 1.5},
        {"table": "t", "limit": 0},
        {"table": "t", "offset": 1, "cursor": "abc"},
        {"table": "t", "format": "xml"},
        {"table": ""},
        {"table": "t", "orderBy": {"column": "id", "direction": "sideways"}},
        {"table": "t", "unknown": 1},
    ):
        with pytest.raises(ValueError):
            QueryRequest.model_validate(bad)
