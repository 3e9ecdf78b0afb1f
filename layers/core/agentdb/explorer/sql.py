"""The SQL the explorer generates, and its opaque page cursors.

Nothing a caller sends is pasted into SQL. Identifiers come from the tenant's catalog and are quoted by
:func:`quote_ident`; values (a table name being looked up, a cursor's key values) are dollar-quoted
literals under a random tag the value does not contain (:func:`literal`), cast to the column's catalog
type. Limits and offsets are validated ints. The SQL then goes through the SQL tools' guard and executor
like any other statement.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from agentdb.errors import InvalidInput

Direction = Literal["asc", "desc"]

# Every relation a user can browse: tables, partitioned tables, views, materialized views, foreign tables.
_RELKINDS = "('r', 'p', 'v', 'm', 'f')"
_USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)
_KIND = (
    "CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'"
    " WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END"
)

# A constant query: no input at all. reltuples is -1 until the table is first analysed: reported as 0.
TABLES_SQL = (
    f"SELECT n.nspname AS schema, c.relname AS name, {_KIND} AS type,"
    " GREATEST(c.reltuples, 0)::bigint AS row_estimate, pg_total_relation_size(c.oid) AS size_bytes"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    f" WHERE c.relkind IN {_RELKINDS} AND {_USER_SCHEMAS}"
    " ORDER BY 1, 2"
)

# Types without a default btree ordering are left out of the all-columns default order.
_UNORDERABLE = "t.typcategory = 'G' OR t.typname IN ('json', '_json', 'xml', '_xml')"


def describe_sql(table: str, schema: str | None) -> str:
    """The relations named ``table`` (in ``schema``, or in any user schema), with their columns.

    One row per relation: schema, name, columns as a JSON array of [name, type with modifiers, type
    without them (for casts), not null, position in the primary key (0: none), orderable]."""
    where = f"c.relname = {literal(table)}"
    if schema is not None:
        where += f" AND n.nspname = {literal(schema)}"
    return (
        "SELECT n.nspname AS schema, c.relname AS name, ("
        "SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, a.atttypmod),"
        " format_type(a.atttypid, NULL), a.attnotnull,"
        " COALESCE(array_position(pk.conkey, a.attnum), 0),"
        f" NOT ({_UNORDERABLE})) ORDER BY a.attnum)"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'"
        f" WHERE c.relkind IN {_RELKINDS} AND {_USER_SCHEMAS} AND {where}"
        " ORDER BY n.nspname = 'public' DESC, n.nspname"
    )


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier: every ``"`` doubled. NUL cannot be in an identifier: refused."""
    if not name or "\x00" in name:
        raise InvalidInput("identifiers must be non-empty and must not contain NUL characters")
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A dollar-quoted string literal under a random tag that does not occur in ``value``.

    A tag that is not a substring of the value cannot be closed early: the closing ``$tag$`` could
    only straddle the end of the value if the value ended in ``$`` + tag."""
    if "\x00" in value:
        raise InvalidInput("values must not contain NUL characters")
    tag = "q" + secrets.token_hex(6)
    while tag in value:
        tag = "q" + secrets.token_hex(6)
    return f"${tag}${value}${tag}$"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as format_type shows it, with modifiers: "character varying(20)"
    cast_type: str  # without modifiers, for casting a cursor value back: "character varying"
    not_null: bool
    pk_position: int  # 1-based position in the primary key; 0 if not in it
    orderable: bool


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    columns: tuple[Column, ...]

    @classmethod
    def from_row(cls, schema: str, name: str, columns: list[list[Any]] | str | None) -> Relation:
        """From a row of :func:`describe_sql` (``columns`` is JSON: parsed by the driver, or still text)."""
        parsed: list[list[Any]] = json.loads(columns) if isinstance(columns, str) else columns or []
        return cls(
            schema,
            name,
            tuple(Column(str(n), str(t), str(ct), bool(nn), int(pk), bool(o)) for n, t, ct, nn, pk, o in parsed),
        )

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def primary_key(self) -> list[Column]:
        return sorted((c for c in self.columns if c.pk_position), key=lambda c: c.pk_position)


@dataclass(frozen=True)
class Order:
    """The page order: ``keys`` in one direction. ``keyset`` when the keys identify a row (the primary key
    is among them and none is nullable), so a cursor can carry the last row's key values."""

    keys: tuple[Column, ...]
    direction: Direction
    keyset: bool

    def fingerprint(self, relation: Relation) -> str:
        """Ties a cursor to its table and order: a cursor of another query is refused, not misread."""
        parts = [relation.schema, relation.name, self.direction, *(k.name for k in self.keys)]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def choose_order(relation: Relation, column: str | None, direction: Direction) -> Order:
    """The requested column (then the primary key as tie-breaker); by default the primary key, else every
    orderable column."""
    pk = relation.primary_key
    if column is not None:
        first = relation.column(column)
        if first is None:
            raise InvalidInput(f"orderBy.column: the table has no column {column!r}")
        if not first.orderable:
            raise InvalidInput(f"orderBy.column: {column!r} is of type {first.type}, which has no ordering")
        keys = [first, *(c for c in pk if c.name != first.name)]
    elif pk:
        keys = pk
    else:
        keys = [c for c in relation.columns if c.orderable]
    keyset = bool(pk) and all(c.not_null for c in keys)
    return Order(tuple(keys), direction, keyset)


@dataclass(frozen=True)
class Cursor:
    fingerprint: str
    offset: int | None = None  # an offset cursor
    values: tuple[str, ...] | None = None  # a keyset cursor: the last row's key values, as text

    def encode(self) -> str:
        body: dict[str, Any] = {"v": 1, "f": self.fingerprint}
        if self.values is not None:
            body["k"] = list(self.values)
        else:
            body["o"] = self.offset
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_CURSOR_CHARS = 16_384
MAX_OFFSET = 1_000_000_000


def decode_cursor(text: str, order: Order, relation: Relation) -> Cursor:
    """Parse and check a cursor; anything that is not one of ours for this very query is a 400."""
    bad = InvalidInput("cursor is not valid for this query: start again without a cursor")
    if len(text) > MAX_CURSOR_CHARS:
        raise bad
    try:
        body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # UnicodeDecodeError is a ValueError
        raise bad from None
    if not isinstance(body, dict) or body.get("v") != 1 or body.get("f") != order.fingerprint(relation):
        raise bad
    if "k" in body and set(body) == {"v", "f", "k"}:
        values = body["k"]
        if (
            not order.keyset
            or not isinstance(values, list)
            or len(values) != len(order.keys)
            or not all(isinstance(v, str) and "\x00" not in v for v in values)
        ):
            raise bad
        return Cursor(body["f"], values=tuple(values))
    if "o" in body and set(body) == {"v", "f", "o"}:
        offset = body["o"]
        if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
            raise bad
        return Cursor(body["f"], offset=offset)
    raise bad


@dataclass(frozen=True)
class Select:
    sql: str
    key_aliases: tuple[str, ...]  # extra output columns carrying the order keys as text (stripped)


def select_page(relation: Relation, order: Order, *, limit: int, offset: int, after: tuple[str, ...] | None) -> Select:
    """``SELECT <columns>[, <keys as text>] FROM <relation> [WHERE (<keys>) > (<after>)] ORDER BY ... LIMIT
    <limit + 1> OFFSET <offset>``: one row more than the page, to know whether there is a next one."""
    if not 1 <= limit <= 1000 or not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput("limit must be 1 to 1000 and offset 0 to 1000000000")
    taken = {c.name for c in relation.columns}
    aliases: list[str] = []
    select = [quote_ident(c.name) for c in relation.columns]
    if order.keyset:
        for index, key in enumerate(order.keys):
            alias = f"_cursor_{index}"
            while alias in taken:
                alias = "_" + alias
            taken.add(alias)
            aliases.append(alias)
            select.append(f"({quote_ident(key.name)})::text AS {quote_ident(alias)}")
    sql = f"SELECT {', '.join(select)} FROM {quote_ident(relation.schema)}.{quote_ident(relation.name)}"
    if after is not None:
        if not order.keyset or len(after) != len(order.keys):
            raise InvalidInput("cursor is not valid for this query: start again without a cursor")
        keys = ", ".join(quote_ident(k.name) for k in order.keys)
        values = ", ".join(f"CAST({literal(v)} AS {k.cast_type})" for k, v in zip(order.keys, after, strict=True))
        # (a, b) > (x, y) compares row-wise, in the order's direction; (a) > (x) is a plain comparison.
        sql += f" WHERE ({keys}) {'>' if order.direction == 'asc' else '<'} ({values})"
    if order.keys:
        direction = "ASC" if order.direction == "asc" else "DESC"
        sql += " ORDER BY " + ", ".join(f"{quote_ident(k.name)} {direction}" for k in order.keys)
    sql += f" LIMIT {int(limit) + 1}"
    if offset:
        sql += f" OFFSET {int(offset)}"
    return Select(sql, tuple(aliases))
