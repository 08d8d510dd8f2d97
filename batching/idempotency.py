"""Creates that can be sent again without doing the work twice, and how to find the work done.

An operation may be sent a second time when the host died after Graph acted but before the
outcome was recorded. For every allow-listed create this module knows, from Graph's own
documentation (and, where Graph documents nothing, from what Graph is known to answer):

- how to send it so that a second send cannot create a second object (`repeatable`);
- whether that is possible at all (`safe_to_resend`);
- which read confirms that a refused create was in fact done before (`existing_lookup`), and
  which object in that read's answer is the operation's result (`found_object`).

Which answers mean "already done" is decided in `batching.classify` (`Verdict.EXISTS`).

Per create: how it is sent; what a second send gets; the read that confirms it.

- `POST /users`: as written; 400 `ObjectConflict` (userPrincipalName); `GET /users/{upn}`.
- `POST /groups` with `uniqueName`: as the upsert `PATCH /groups(uniqueName='..')` with
  `Prefer: create-if-missing`; 204 without a body; `GET /groups(uniqueName='..')`.
- `POST /groups` without `uniqueName`: as written; a second group. Not safe.
- `POST /users/{id}/events`, `/groups/{id}/events`: with a `transactionId`; no second event
  (Graph's documented purpose of the property), or 400 `ErrorDuplicateTransactionId`;
  `GET .../events/{id}` when that error names the event.
- `POST /teams/{id}/channels`: as written; 400 "Channel name already existed" (names are
  unique in a team); `GET /teams/{id}/channels?$filter=displayName eq '..'`.
- `PUT /groups/{id}/team`, `POST /teams` with `group@odata.bind`: as written; 409 Conflict
  (one team per group); `GET /teams/{group id}`.
- `POST /teams` from a template: as written; a second group and team. Not safe.
- `POST /groups/{id}/members/$ref`, `owners/$ref`: as written; 400 "... already exist";
  nothing to read.
- `POST /users/{id}/calendar/calendarPermissions`: as written; undocumented. Not safe.

Every URL built here is in the form it is sent (`allowlist.url_as_sent`) and passes the
allow-list; one that would not is never returned (None instead).
"""

from __future__ import annotations

import re
import uuid
from enum import Enum
from typing import Any, Final
from urllib.parse import quote

from batching.allowlist import find_allowed, path_of, url_as_sent, url_problem
from batching.graph.client import ItemResponse
from batching.graph.throttling import header
from batching.models import Operation

__all__ = [
    "Create",
    "create_kind",
    "existing_lookup",
    "found_object",
    "group_url",
    "is_upsert",
    "repeatable",
    "safe_to_resend",
    "transaction_id",
]

# Graph's opt-in to the group upsert: without it, a PATCH by uniqueName only updates (404 when
# the group is missing).
CREATE_IF_MISSING: Final = "create-if-missing"
# The namespace of the event transactionIds the app derives (UUID version 5 of job and operation).
_TRANSACTION_NAMESPACE: Final = uuid.UUID("d987d6e2-496f-49af-be2b-8021f5732fc3")
# Characters kept as they are inside a path segment (RFC 3986 sub-delims, ':' and '@'); letters,
# digits and `-._~` are kept too, everything else is percent-encoded.
_SEGMENT_SAFE: Final = "!$&'()*+,;=:@"
# `group@odata.bind` of `POST /teams`: `.../groups/{id}` or, as Graph's docs write it, `.../groups('{id}')`.
_BOUND_GROUP = re.compile(r"/groups(?:/(?P<plain>[^/?#()']+)|\('(?P<quoted>[^/?#']+)'\))\Z", re.IGNORECASE)


class Create(Enum):
    """What an allow-listed write creates, as far as sending it again is concerned."""

    USER = "user"  # POST /users: userPrincipalName is unique
    GROUP = "group"  # POST /groups: no natural key (mailNickname is unique for M365 groups only)
    GROUP_UPSERT = "group upsert"  # PATCH /groups(uniqueName='..') with Prefer: create-if-missing
    EVENT = "event"  # POST /users/{id}/events, /groups/{id}/events: transactionId
    CHANNEL = "channel"  # POST /teams/{id}/channels: displayName is unique in a team
    TEAM = "team"  # PUT /groups/{id}/team, POST /teams from a group: one team per group
    NEW_TEAM = "new team"  # POST /teams from a template: a new group and team each time
    REFERENCE = "reference"  # POST /groups/{id}/members/$ref, owners/$ref
    CALENDAR_PERMISSION = "calendar permission"  # POST /users/{id}/calendar/calendarPermissions


_KINDS: Final[dict[tuple[str, str], Create]] = {
    ("POST", "/users"): Create.USER,
    ("POST", "/groups"): Create.GROUP,
    ("PATCH", "/groups(uniqueName='{key}')"): Create.GROUP_UPSERT,
    ("POST", "/users/{id}/events"): Create.EVENT,
    ("POST", "/groups/{id}/events"): Create.EVENT,
    ("POST", "/teams/{id}/channels"): Create.CHANNEL,
    ("PUT", "/groups/{id}/team"): Create.TEAM,
    ("POST", "/teams"): Create.TEAM,
    ("POST", "/groups/{id}/members/$ref"): Create.REFERENCE,
    ("POST", "/groups/{id}/owners/$ref"): Create.REFERENCE,
    ("POST", "/users/{id}/calendar/calendarPermissions"): Create.CALENDAR_PERMISSION,
}


def create_kind(operation: Operation) -> Create | None:
    """What `operation` creates; None for reads, updates, deletes and actions (and for anything
    off the allow-list). A PATCH by uniqueName is a create only with `Prefer: create-if-missing`;
    `POST /teams` is `TEAM` when its body binds an existing group, else `NEW_TEAM`."""
    allowed = find_allowed(operation.method, path_of(operation.url))
    kind = _KINDS.get((allowed.method, allowed.template)) if allowed else None
    if kind is Create.GROUP_UPSERT and not is_upsert(operation):
        return None
    if kind is Create.TEAM and operation.method == "POST" and _bound_group(operation.body) is None:
        return Create.NEW_TEAM
    return kind


def is_upsert(operation: Operation) -> bool:
    """Whether `operation` asks Graph to create the group if it is missing: a PATCH by
    uniqueName whose `Prefer` header holds `create-if-missing` (any case, among others)."""
    if operation.method != "PATCH":
        return False
    allowed = find_allowed(operation.method, path_of(operation.url))
    if allowed is None or allowed.template != "/groups(uniqueName='{key}')":
        return False
    prefer = header(operation.headers, "Prefer") or ""
    return any(part.strip().lower() == CREATE_IF_MISSING for part in re.split(r"[,;]", prefer))


# --- sending -----------------------------------------------------------------------------------


def transaction_id(job_id: str, operation_id: str) -> str:
    """The event `transactionId` the app gives operation `operation_id` of job `job_id`: the
    same on every send of that operation, different for every other operation (a UUID)."""
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, f"{job_id}\n{operation_id}"))


def group_url(unique_name: object) -> str | None:
    """`/groups(uniqueName='..')` for a uniqueName, as it is sent: quotes doubled (OData),
    then percent-encoded as one path segment. None when the value cannot be such a key (not
    text, empty, or holding `/`, `\\`, `%` or control characters, which a path may not carry)."""
    if not isinstance(unique_name, str) or not unique_name:
        return None
    try:
        key = quote(unique_name.replace("'", "''"), safe=_SEGMENT_SAFE)
    except UnicodeEncodeError:  # unpaired surrogates: not text
        return None
    return _gated("PATCH", f"/groups(uniqueName='{key}')")


def repeatable(job_id: str, operation: Operation) -> Operation:
    """The operation in a form Graph will not carry out twice, to send instead of `operation`.

    Call it on the operation as it will be sent (output references resolved), before the
    send-time allow-list check; the result passes that check whenever `operation` does.

    - `POST /groups` whose body has a usable `uniqueName` becomes the upsert
      `PATCH /groups(uniqueName='..')` with `Prefer: create-if-missing` added to any `Prefer`
      given, and the body without `uniqueName` (the key is in the URL). Graph answers 201 with
      the group when it creates it and 204 without a body when it exists.
    - An event create (`POST /users/{id}/events`, `/groups/{id}/events`) gets the
      `transactionId` of `transaction_id(job_id, operation.id)` when its body has none; a
      maker's own `transactionId` is kept.
    - Everything else is returned unchanged (the same object).

    Idempotent: `repeatable(j, repeatable(j, op)) == repeatable(j, op)`.
    """
    kind = create_kind(operation)
    body = operation.body
    if kind is Create.GROUP and isinstance(body, dict):
        url = group_url(body.get("uniqueName"))
        if url is None:
            return operation
        return operation.model_copy(
            update={
                "method": "PATCH",
                "url": url,
                "headers": _with_create_if_missing(operation.headers),
                "body": {key: value for key, value in body.items() if key != "uniqueName"},
            }
        )
    if kind is Create.EVENT and isinstance(body, dict) and "transactionId" not in body:
        return operation.model_copy(
            update={"body": {**body, "transactionId": transaction_id(job_id, operation.id)}}
        )
    return operation


def safe_to_resend(operation: Operation) -> bool:
    """Whether sending `operation` (through `repeatable`) a second time cannot do the work
    twice, so an operation whose first outcome is unknown may be sent again.

    False for `POST /groups` without a usable `uniqueName` (each send makes a new group),
    `POST /teams` from a template (each makes a new group and team), calendar permission
    creates (Graph documents no repeat answer), event creates whose body cannot carry a
    `transactionId`, and anything off the allow-list. True for the rest: reads, updates and
    deletes, user, member and owner creates, channels, teams from a group, group upserts,
    event creates, and actions such as `assignLicense`.
    """
    if find_allowed(operation.method, path_of(operation.url)) is None:
        return False
    kind = create_kind(operation)
    body = operation.body
    if kind is Create.GROUP:
        return isinstance(body, dict) and group_url(body.get("uniqueName")) is not None
    if kind is Create.EVENT:
        return isinstance(body, dict) and isinstance(body.get("transactionId", ""), str)
    return kind not in (Create.NEW_TEAM, Create.CALENDAR_PERMISSION)


# --- confirming "already done" -----------------------------------------------------------------


def existing_lookup(operation: Operation, answer: ItemResponse) -> str | None:
    """The `GET` URL that reads the object `operation` would have created, when Graph's
    `answer` says it was done before (`classify` gave `Verdict.EXISTS`), or None when there is
    no way to read it (then Graph's answer stands as it is).

    `operation` is the operation as it was sent (after `repeatable`). The URL is in its sent
    form and on the allow-list (a request the app makes on its own must pass the same gate as
    any operation; the caller checks it with `sendable_problems` like every other request).
    Read its answer with `found_object`.
    """
    kind = create_kind(operation)
    body = operation.body if isinstance(operation.body, dict) else {}
    segments = path_of(operation.url).split("/")
    if kind is Create.USER:
        upn = body.get("userPrincipalName")
        segment = _quote_text(upn, safe="@") if isinstance(upn, str) and upn else None
        return _gated("GET", f"/users/{segment}") if segment else None
    if kind is Create.GROUP_UPSERT:
        return _gated("GET", path_of(operation.url))
    if kind is Create.CHANNEL:
        name = body.get("displayName")
        if not isinstance(name, str) or not name:
            return None
        literal = _quote_text(name.replace("'", "''"), safe="")
        if literal is None:
            return None
        return _gated("GET", f"/teams/{segments[2]}/channels?$filter=displayName%20eq%20'{literal}'")
    if kind is Create.TEAM:
        group = segments[2] if operation.method == "PUT" else _bound_group(operation.body)
        return _gated("GET", f"/teams/{group}") if group else None
    if kind is Create.EVENT:
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        event_id = error.get("@event.existingEventId") if isinstance(error, dict) else None
        segment = _quote_text(event_id, safe=_SEGMENT_SAFE) if isinstance(event_id, str) else None
        return _gated("GET", f"/{segments[1]}/{segments[2]}/events/{segment}") if segment else None
    return None


def found_object(operation: Operation, lookup: ItemResponse) -> dict[str, Any] | None:
    """The object the lookup of `existing_lookup` found, to record as `operation`'s response
    (so `{{op.id}}` references resolve), or None when it found nothing that is the object:
    an error or empty answer, an object without an `id`, or no channel of that name.

    A channel lookup answers a collection: the channel is the one whose `displayName` is the
    name asked for (exactly, else ignoring case, as Teams compares names). Record the answer
    as `dataclasses.replace(lookup, body=found)`.
    """
    if not 200 <= lookup.status < 300 or not isinstance(lookup.body, dict):
        return None
    if create_kind(operation) is not Create.CHANNEL:
        return lookup.body if isinstance(lookup.body.get("id"), str) else None
    name = operation.body.get("displayName") if isinstance(operation.body, dict) else None
    values = lookup.body.get("value")
    if not isinstance(name, str) or not isinstance(values, list):
        return None
    named = [
        v
        for v in values
        if isinstance(v, dict)
        and isinstance(v.get("id"), str)
        and isinstance(v.get("displayName"), str)
        and v["displayName"].casefold() == name.casefold()
    ]
    exact = [channel for channel in named if channel["displayName"] == name]
    return (exact or named)[0] if named else None


# --- helpers -----------------------------------------------------------------------------------


def _gated(method: str, url: str) -> str | None:
    """`url` when it is in its sent form and `method` on it is allow-listed, else None."""
    if url_problem(url) is not None or url_as_sent(url) != url or find_allowed(method, path_of(url)) is None:
        return None
    return url


def _quote_text(text: str, *, safe: str) -> str | None:
    """`text` percent-encoded as UTF-8 (None for unpaired surrogates, which are not text)."""
    try:
        return quote(text, safe=safe)
    except UnicodeEncodeError:
        return None


def _with_create_if_missing(headers: dict[str, str]) -> dict[str, str]:
    """The headers with `create-if-missing` among the `Prefer` preferences (RFC 7240: one
    header, preferences separated by commas)."""
    out = dict(headers)
    for name, value in headers.items():
        if name.lower() == "prefer":
            parts = [part.strip().lower() for part in re.split(r"[,;]", value)]
            if CREATE_IF_MISSING not in parts:
                out[name] = f"{value}, {CREATE_IF_MISSING}" if value.strip() else CREATE_IF_MISSING
            return out
    out["Prefer"] = CREATE_IF_MISSING
    return out


def _bound_group(body: object) -> str | None:
    """The group id in a `POST /teams` body's `group@odata.bind`, as a path segment, or None."""
    if not isinstance(body, dict):
        return None
    bound = next((v for k, v in body.items() if isinstance(k, str) and k.lower() == "group@odata.bind"), None)
    match = _BOUND_GROUP.search(bound) if isinstance(bound, str) else None
    if match is None:
        return None
    return match.group("plain") or match.group("quoted")
