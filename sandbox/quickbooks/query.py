"""QBO's query language: ``SELECT * | COUNT(*) | fields FROM Entity [WHERE a AND b]
[ORDERBY f [ASC|DESC], ...] [STARTPOSITION n] [MAXRESULTS m]``.

Operators ``= < > <= >= != IN LIKE``; no OR (as in QBO). MAXRESULTS defaults to 100 and
is capped at 1000. MetaData times compare at QBO's whole-second resolution. A Customer
query that does not mention ``Active`` returns active customers only, as QBO does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from sandbox.quickbooks.common import QBError, parse_time
from sandbox.quickbooks.schemas import SCHEMAS
from sandbox.quickbooks.store import Realm, public

DEFAULT_MAX = 100
MAX_RESULTS = 1000
TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>-?\d+(?:\.\d+)?)(?![\w.])"
    r"|(?P<op><=|>=|!=|<>|=|<|>|\(|\)|,|\*)|(?P<word>[A-Za-z_][\w.]*))"
)
ENTITY_NAMES = {
    "customer": "Customer",
    "invoice": "Invoice",
    "payment": "Payment",
    "companyinfo": "CompanyInfo",
}
TIME_FIELDS = {"metadata.createtime": "_c", "metadata.lastupdatedtime": "_u"}
CANONICAL = {  # lower-cased field name -> QBO's spelling, so lookups rarely scan
    str(key).lower(): key for schema in SCHEMAS.values() for key in schema
} | {"value": "value", "address": "Address", "freeformnumber": "FreeFormNumber"}
OPS = frozenset({"=", "<", ">", "<=", ">=", "!=", "<>", "IN", "LIKE"})


@dataclass
class Query:
    entity: str
    count: bool = False
    fields: list[str] | None = None
    where: list[tuple[str, str, Any]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    start: int = 1
    max_results: int = DEFAULT_MAX


def parse_error(detail: str) -> QBError:
    return QBError("4000", "Error parsing query", f"QueryParserError: {detail}")


def _tokens(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    text = text.strip().rstrip(";")
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise parse_error(
                f'Encountered "{text[position : position + 10].strip()}" at column {position + 1}'
            )
        position = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif kind == "num":
            value = float(value) if "." in value else int(value)
        tokens.append((kind, value))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def next(self, expected: str = "a token") -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise parse_error(f'Encountered "<EOF>"; was expecting {expected}')
        self.index += 1
        return token

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token and token[0] in ("word", "op") and str(token[1]).upper() in words:
            self.index += 1
            return str(token[1]).upper()
        return None

    def expect(self, word: str) -> None:
        if self.keyword(word) is None:
            token = self.peek()
            raise parse_error(f'Encountered "{token[1] if token else "<EOF>"}"; was expecting {word}')

    def word(self) -> str:
        kind, value = self.next("a name")
        if kind != "word":
            raise parse_error(f'Encountered "{value}"; was expecting a name')
        return str(value)

    def value(self) -> Any:
        kind, value = self.next("a value")
        if kind in ("str", "num"):
            return value
        if kind == "word" and str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise parse_error(f'Encountered "{value}"; was expecting a value')

    def integer(self, name: str) -> int:
        kind, value = self.next("an integer")
        if kind != "num" or not isinstance(value, int):
            raise parse_error(f'{name} expects an integer, got "{value}"')
        return value


def parse(text: str) -> Query:
    """Parse a query (QBO's 4000 fault for syntax errors, 4001 for unknown names)."""
    parser = _Parser(text)
    parser.expect("SELECT")
    count, fields = _select_list(parser)
    parser.expect("FROM")
    name = parser.word()
    entity = ENTITY_NAMES.get(name.lower())
    if entity is None:
        raise QBError("4001", "Invalid query", f"QueryValidationError: Invalid entity name: {name}")
    query = Query(entity=entity, count=count, fields=fields)
    if parser.keyword("WHERE"):
        query.where = _conditions(parser, entity)
    if parser.keyword("ORDERBY") or _order_by(parser):
        query.order = _order(parser, entity)
    if parser.keyword("STARTPOSITION"):
        query.start = max(1, parser.integer("STARTPOSITION"))
    if parser.keyword("MAXRESULTS"):
        query.max_results = max(0, min(MAX_RESULTS, parser.integer("MAXRESULTS")))
    if parser.peek() is not None:
        raise parse_error(f'Encountered "{parser.peek()[1]}"; was expecting <EOF>')  # type: ignore[index]
    return query


def _order_by(parser: _Parser) -> bool:
    """True after ``ORDER BY`` (two words); QBO's own spelling is ``ORDERBY``."""
    if parser.keyword("ORDER") is None:
        return False
    parser.expect("BY")
    return True


def _select_list(parser: _Parser) -> tuple[bool, list[str] | None]:
    if parser.keyword("*"):
        return False, None
    if parser.keyword("COUNT"):
        for symbol in ("(", "*", ")"):
            parser.expect(symbol)
        return True, None
    fields = [parser.word()]
    while parser.keyword(","):
        fields.append(parser.word())
    return False, fields


def _check_field(name: str, entity: str) -> str:
    lowered = name.lower()
    if lowered in TIME_FIELDS or lowered == "id":
        return lowered
    schema = SCHEMAS.get(entity)
    head = lowered.split(".", 1)[0]
    if schema is not None and not any(str(key).lower() == head for key in schema):
        raise QBError("4001", "Invalid query", f"QueryValidationError: property '{name}' is not queryable")
    return lowered


def _conditions(parser: _Parser, entity: str) -> list[tuple[str, str, Any]]:
    conditions = []
    while True:
        name = _check_field(parser.word(), entity)
        kind, op = parser.next("an operator")
        op = str(op).upper()
        if op not in OPS:
            raise parse_error(f'Encountered "{op}"; was expecting an operator')
        if op == "IN":
            parser.expect("(")
            values = [parser.value()]
            while parser.keyword(","):
                values.append(parser.value())
            parser.expect(")")
            conditions.append((name, op, values))
        else:
            conditions.append((name, op, parser.value()))
        if parser.keyword("OR"):
            raise parse_error("OR is not supported; was expecting AND")
        if not parser.keyword("AND"):
            return conditions


def _order(parser: _Parser, entity: str) -> list[tuple[str, bool]]:
    order = [(_check_field(parser.word(), entity), parser.keyword("DESC", "ASC") == "DESC")]
    while parser.keyword(","):
        order.append((_check_field(parser.word(), entity), parser.keyword("DESC", "ASC") == "DESC"))
    return order


# Execution --------------------------------------------------------------------------


def _lookup(record: dict[str, Any], path: str) -> Any:
    if path in TIME_FIELDS:
        return math.floor(record[TIME_FIELDS[path]])  # QBO shows and compares whole seconds
    if path == "id":
        return int(record["Id"])
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        key = CANONICAL.get(part, part)
        if key not in value:  # not a schema name: match case-insensitively
            key = next((k for k in value if k.lower() == part), key)
        value = value.get(key)
    if isinstance(value, dict) and "value" in value:
        value = value["value"]  # CustomerRef = '12' compares the reference id
    return value


_time_value = lru_cache(maxsize=256)(parse_time)  # a WHERE time is compared with every row


def _coerce(path: str, actual: Any, expected: Any) -> tuple[Any, Any]:
    if path in TIME_FIELDS:
        try:
            return actual, _time_value(str(expected))
        except ValueError:
            raise QBError(
                "4000", "Error parsing query", f"QueryParserError: Invalid date/time: {expected}"
            ) from None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual in (True, "true"), expected in (True, "true")
    if isinstance(expected, int | float) or path == "id":
        try:
            return float(actual), float(expected)
        except (TypeError, ValueError):
            return None, None
    return str(actual if actual is not None else "").casefold(), str(expected).casefold()


def _test(record: dict[str, Any], condition: tuple[str, str, Any]) -> bool:
    path, op, expected = condition
    actual = _lookup(record, path)
    if op == "IN":
        return any(_test(record, (path, "=", value)) for value in expected)
    if op == "LIKE":
        pattern = re.escape(str(expected)).replace("%", ".*").replace("\\%", ".*")
        return re.fullmatch(pattern, str(actual or ""), re.IGNORECASE | re.DOTALL) is not None
    left, right = _coerce(path, actual, expected)
    if left is None:
        return False
    if op == "=":
        return bool(left == right)
    if op in ("!=", "<>"):
        return bool(left != right)
    return bool({"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op])


def _id_key(record: dict[str, Any]) -> int:
    return int(record["Id"])


def _sort_key(record: dict[str, Any], *, path: str) -> tuple[int, Any]:
    if path in TIME_FIELDS:
        return (0, record[TIME_FIELDS[path]])
    value = _lookup(record, path)
    if isinstance(value, bool | int | float):
        return (0, value)
    if value is None:
        return (1, "")
    return (0, str(value).casefold())


def _rows(realm: Realm, query: Query) -> list[dict[str, Any]]:
    if query.entity == "CompanyInfo":
        return [realm.company]
    rows = realm.entities[query.entity].values()
    where = list(query.where)
    if query.entity == "Customer" and not any(path == "active" for path, _, _ in where):
        where.append(("active", "=", True))
    return [r for r in rows if all(_test(r, c) for c in where)]


def execute(realm: Realm, query: Query) -> dict[str, Any]:
    """The ``QueryResponse`` object for a parsed query."""
    rows = _rows(realm, query)
    if query.count:
        return {"totalCount": len(rows)}
    rows.sort(key=_id_key)
    for path, descending in reversed(query.order):
        rows.sort(key=partial(_sort_key, path=path), reverse=descending)
    page = rows[query.start - 1 : query.start - 1 + query.max_results]
    if not page:
        return {}
    out = [_project(r, query.fields) for r in page]
    return {query.entity: out, "startPosition": query.start, "maxResults": len(out)}


def _project(record: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if fields is None:
        return public(record)
    wanted = {f.split(".", 1)[0].lower() for f in fields}
    view = {k: v for k, v in record.items() if k.lower() in wanted and k[0] != "_"}
    view.update(Id=record["Id"], SyncToken=record["SyncToken"], domain="QBO", sparse=True)
    return view
