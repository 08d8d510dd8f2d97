"""`GET /users` and `GET /users/{id}` as Graph serves them: `$select`, `$filter`, `$top`,
`$count`, `$expand=manager`, and paging with `@odata.nextLink`.

What Microsoft documents (learn.microsoft.com/graph/api/user-list, /graph/paging,
/graph/query-parameters, /graph/aad-advanced-queries, /graph/known-issues):

- A page holds 100 users by default and at most 999 (`$top`; outside 1..999 is a 400). With
  `$expand` on directory objects a page holds at most 100, whatever `$top` says. The next page
  is at `@odata.nextLink`, an absolute URL to follow as it is (its `$skiptoken` is opaque).
- Without `$select` a default set of properties comes back; with it, exactly the properties
  named, in Graph's own case whatever case the request used (an unknown one is a 400).
- `$filter` by default: `eq`, `in` (at most 15 values), `startsWith`; `in` is allowed wherever
  `eq` is. `$count=true` needs `ConsistencyLevel: eventual` and is ignored without it;
  `$expand` is not supported together with those advanced queries.
- Recently created, changed or deleted users may be missing from lists for a while
  (replication): users still inside the tenant's replication lag are left out.

The emulator's choices where the documents say nothing: users come in the order they were
created; `$filter` takes one comparison (no `and`/`or`); a `$skiptoken` carries the position and
a digest of the query it belongs to (a token used with another query is a 400). String
comparisons ignore case, as the directory's do.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

DEFAULT_PAGE = 100
MAX_PAGE = 999
MAX_EXPANDED_PAGE = 100
MAX_IN_VALUES = 15

# Properties a user row can be asked for; the key is the lower-case name.
USER_PROPERTIES = {
    name.lower(): name
    for name in (
        "id",
        "userPrincipalName",
        "displayName",
        "givenName",
        "surname",
        "jobTitle",
        "department",
        "officeLocation",
        "usageLocation",
        "companyName",
        "employeeId",
        "employeeType",
        "mobilePhone",
        "businessPhones",
        "city",
        "state",
        "country",
        "streetAddress",
        "postalCode",
        "preferredLanguage",
        "mail",
        "mailNickname",
        "accountEnabled",
        "userType",
        "createdDateTime",
    )
}
DEFAULT_SELECT = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
_TEXT = r"'((?:[^']|'')*)'"
_NAME = r"([A-Za-z]+)"
_EQ = re.compile(rf"^\s*{_NAME}\s+eq\s+(?:{_TEXT}|(true|false|null))\s*$", re.IGNORECASE)
_IN = re.compile(rf"^\s*{_NAME}\s+in\s+\((.*)\)\s*$", re.IGNORECASE)
_STARTS = re.compile(rf"^\s*startswith\(\s*{_NAME}\s*,\s*{_TEXT}\s*\)\s*$", re.IGNORECASE)
_LITERAL = re.compile(rf"\s*{_TEXT}\s*(,|$)")
_EXPAND = re.compile(r"^\s*manager\s*(?:\(\s*\$select\s*=\s*([^)]*)\))?\s*$", re.IGNORECASE)


class QueryError(ValueError):
    """A query Graph refuses with 400; the message is Graph's wording where it is known."""


@dataclass(frozen=True)
class UserQuery:
    select: tuple[str, ...]
    expand_manager: tuple[str, ...] | None  # the manager's selected properties, when expanded
    match: Callable[[dict[str, Any]], bool] | None
    keys: tuple[str, ...] | None  # ids or UPNs (lower case) when the filter names them
    top: int
    count: bool
    options: tuple[tuple[str, str], ...]  # the options that define the result (no skiptoken)
    skip: int


def parse(query: str, *, consistency_eventual: bool) -> UserQuery:
    """The query options of a users request; QueryError for what Graph would refuse."""
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        options[key.lower().lstrip("$")] = value
    select = _select(options.get("select"))
    expand = _expand(options.get("expand"))
    match, keys = _filter(options.get("filter"))
    count = options.get("count", "").lower() == "true" and consistency_eventual
    if count and expand is not None:
        raise QueryError("$expand is not supported with advanced queries (ConsistencyLevel: eventual).")
    top = DEFAULT_PAGE
    if "top" in options:
        if not options["top"].isdigit() or not 1 <= int(options["top"]) <= MAX_PAGE:
            raise QueryError(
                f"Invalid page size specified: '{options['top']}'. Must be between 1 and 999 inclusive."
            )
        top = int(options["top"])
    if expand is not None:
        top = min(top, MAX_EXPANDED_PAGE)
    defining = tuple(sorted((k, v) for k, v in options.items() if k != "skiptoken"))
    skip = _skip(options.get("skiptoken"), defining)
    return UserQuery(select, expand, match, keys, top, count, defining, skip)


def page(
    query: UserQuery,
    users: Iterable[dict[str, Any]],
    visible: Callable[[dict[str, Any]], bool],
    by_key: Callable[[str], dict[str, Any] | None],
    manager_of: Callable[[dict[str, Any]], dict[str, Any] | None],
    base_url: str,
) -> dict[str, Any]:
    """One page of the answer, with `@odata.nextLink` when more users match. The skiptoken is
    a position in the tenant's own order, so a page costs its own users, not the ones before."""
    if query.keys is not None:
        found = (by_key(key) for key in query.keys)
        source: Iterable[dict[str, Any]] = [user for user in found if user is not None]
    else:
        source = users

    def matches(user: dict[str, Any]) -> bool:
        return visible(user) and (query.match is None or query.match(user))

    window: list[dict[str, Any]] = []
    position = query.skip
    more = False
    for user in itertools.islice(source, query.skip, None):
        if matches(user):
            if len(window) == query.top:
                more = True
                break
            window.append(user)
        position += 1
    body: dict[str, Any] = {
        "@odata.context": f"{base_url}/$metadata#users({','.join(query.select)})",
    }
    if query.count:
        body["@odata.count"] = sum(1 for user in source if matches(user))
    body["value"] = [shape(user, query, manager_of) for user in window]
    if more:
        body["@odata.nextLink"] = _next_link(base_url, query, position)
    return body


def shape(
    user: dict[str, Any], query: UserQuery, manager_of: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> dict[str, Any]:
    """The user as Graph returns it: the selected properties (null when unset), in Graph's case."""
    row = {name: user.get(name) for name in query.select}
    if name_list := [n for n in row if n == "businessPhones"]:
        for name in name_list:
            row[name] = row[name] or []
    if query.expand_manager is not None:
        manager = manager_of(user)
        if manager is not None:
            row["manager"] = {
                "@odata.type": "#microsoft.graph.user",
                **{name: manager.get(name) for name in query.expand_manager},
            }
    return row


def selected(query: str) -> UserQuery:
    """`$select`/`$expand` of a single-user GET (no filter or paging)."""
    options = {key.lower().lstrip("$"): value for key, value in parse_qsl(query, keep_blank_values=True)}
    select = _select(options.get("select")) if "select" in options else tuple(DEFAULT_SELECT)
    return UserQuery(select, _expand(options.get("expand")), None, None, 1, False, (), 0)


def _select(text: str | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_SELECT
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        canonical = USER_PROPERTIES.get(name.lower())
        if canonical is None:
            raise QueryError(f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
        if canonical not in names:
            names.append(canonical)
    if "id" not in names:  # Graph always returns the id
        names.append("id")
    return tuple(names)


def _expand(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    found = _EXPAND.match(text)
    if found is None:
        raise QueryError("Only $expand=manager or manager($select=...) is supported (emulator).")
    return _select(found.group(1)) if found.group(1) else DEFAULT_SELECT


def _property(name: str) -> str:
    canonical = USER_PROPERTIES.get(name.lower())
    if canonical is None:
        raise QueryError(f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
    return canonical


def _text_equals(name: str, wanted: set[str]) -> Callable[[dict[str, Any]], bool]:
    def match(user: dict[str, Any]) -> bool:
        value = user.get(name)
        return isinstance(value, str) and value.lower() in wanted

    return match


def _filter(text: str | None) -> tuple[Callable[[dict[str, Any]], bool] | None, tuple[str, ...] | None]:
    """The filter as a predicate, and the keys it names when it is `id`/`userPrincipalName` eq or in."""
    if text is None or not text.strip():
        return None, None
    if found := _EQ.match(text):
        name = _property(found.group(1))
        if found.group(3) is not None:
            literal = found.group(3).lower()
            value: Any = None if literal == "null" else literal == "true"
            return (lambda user: user.get(name) == value), None
        wanted = found.group(2).replace("''", "'").lower()
        keys: tuple[str, ...] | None = (wanted,) if name in ("id", "userPrincipalName") else None
        return _text_equals(name, {wanted}), keys
    if found := _IN.match(text):
        name = _property(found.group(1))
        values = _literals(found.group(2))
        if len(values) > MAX_IN_VALUES:
            raise QueryError(
                f"Too many expressions in the 'in' operator: {len(values)}; "
                f"at most {MAX_IN_VALUES} are supported."
            )
        lowered = [value.lower() for value in values]
        keys = tuple(dict.fromkeys(lowered)) if name in ("id", "userPrincipalName") else None
        return _text_equals(name, set(lowered)), keys
    if found := _STARTS.match(text):
        name = _property(found.group(1))
        prefix = found.group(2).replace("''", "'").lower()
        return (lambda user: str(user.get(name) or "").lower().startswith(prefix)), None
    raise QueryError("Unsupported or invalid query filter clause specified (emulator: eq, in or startsWith).")


def _literals(text: str) -> list[str]:
    values: list[str] = []
    position = 0
    while position < len(text):
        found = _LITERAL.match(text, position)
        if found is None:
            raise QueryError("Syntax error in the 'in' operator: expected quoted values separated by commas.")
        values.append(found.group(1).replace("''", "'"))
        position = found.end()
    return values


def _digest(options: tuple[tuple[str, str], ...]) -> str:
    return hashlib.sha256(json.dumps(options).encode()).hexdigest()[:16]


def _skip(token: str | None, options: tuple[tuple[str, str], ...]) -> int:
    if token is None:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"==").decode())
        position, digest = int(decoded["p"]), str(decoded["q"])
    except (ValueError, KeyError, TypeError):
        raise QueryError("The $skiptoken is not valid.") from None
    if digest != _digest(options) or position < 0:
        raise QueryError("The $skiptoken does not belong to this query.")
    return position


def _next_link(base_url: str, query: UserQuery, position: int) -> str:
    token = base64.urlsafe_b64encode(
        json.dumps({"p": position, "q": _digest(query.options)}).encode()
    ).decode()
    # Graph writes its own form of the query (its order, its encoding); follow it as it is.
    parts = [f"%24{key}={quote(value, safe='')}" for key, value in reversed(query.options)]
    parts.append(f"%24skiptoken={token.rstrip('=')}")
    return f"{base_url}/users?{'&'.join(parts)}"
