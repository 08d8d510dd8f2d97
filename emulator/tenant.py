"""The emulator's in-memory tenant: users, groups (and their uniqueName upsert), members, licences,
teams, channels, events (deduplicated by transactionId)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from emulator import user_queries

JsonBody = Any


@dataclass
class Answer:
    status: int
    body: JsonBody = None
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> Answer:
    payload: dict[str, Any] = {"code": code, "message": message}
    if details:
        payload["details"] = details
    payload["innerError"] = {"request-id": str(uuid.uuid4()), "date": "2026-01-01T00:00:00"}
    return Answer(status, {"error": payload})


# A handler gets the tenant, the path's named parts (plus `$query`, the raw query string, and
# `$prefer`, the request's Prefer header) and the JSON body.
Handler = Callable[["Tenant", dict[str, str], JsonBody], Answer]


@dataclass
class Tenant:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    user_ids_by_upn: dict[str, str] = field(default_factory=dict)  # lower-case UPN -> id
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_ids_by_unique_name: dict[str, str] = field(default_factory=dict)  # lower-case -> id
    members: dict[str, set[str]] = field(default_factory=dict)
    owners: dict[str, set[str]] = field(default_factory=dict)
    managers: dict[str, str] = field(default_factory=dict)
    licenses: dict[str, set[str]] = field(default_factory=dict)
    teams: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # (calendar owner's id, transactionId) -> (the event's id, the body that created it)
    event_transactions: dict[tuple[str, str], tuple[str, JsonBody]] = field(default_factory=dict)
    calendar_permissions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, key) per create
    # Replication lag: a new user or group is invisible to other requests for this long.
    lag_seconds: float = 0.0
    visible_at: dict[str, float] = field(default_factory=dict)
    # The version root callers use, which `@odata.nextLink`s point at (the app sets it per call).
    base_url: str = "https://graph.microsoft.com/v1.0"
    # `POST /teams` runs as a teamsAsyncOperation: inProgress for this long, then `team_outcome`
    # ("succeeded" or "failed"); the team exists only once it succeeded. `location_form` is how
    # the 202's Location is written: "quoted" (Graph's docs), "bare", "absolute" or "segments".
    team_operation_seconds: float = 0.0
    # Graph's Teams pages: a team is made only from a group with at least one owner.
    team_requires_owner: bool = False
    team_outcome: str = "succeeded"
    location_form: str = "quoted"
    team_operations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _visible(self, object_id: str) -> bool:
        return time.monotonic() >= self.visible_at.get(object_id, 0.0)

    def group(self, key: str) -> dict[str, Any] | None:
        found = self.groups.get(key)
        return found if found is not None and self._visible(key) else None

    def seed_users(self, count: int, domain: str = "contoso.com", *, profile: bool = False) -> list[str]:
        """user1..userN@domain; with `profile`, each also gets the HR attributes and manager of
        `seeded_profile` (a stand-in for a tenant an HR system has been feeding)."""
        upns = []
        for index in range(1, count + 1):
            upn = f"user{index}@{domain}"
            body = {"userPrincipalName": upn, "displayName": f"User {index}"}
            if profile:
                body.update(seeded_profile(index))
            self._add_user(body)
            upns.append(upn)
        if profile:
            for index in range(1, count + 1):
                boss = seeded_manager(index)
                if boss is not None and boss <= count:
                    user, manager = self.find_user(upns[index - 1]), self.find_user(upns[boss - 1])
                    if user is not None and manager is not None:
                        self.managers[user["id"]] = manager["id"]
        return upns

    # --- lookups ---------------------------------------------------------------------

    def find_user(self, key: str, *, include_unreplicated: bool = False) -> dict[str, Any] | None:
        user = self.users.get(key) or self.users.get(self.user_ids_by_upn.get(key.lower(), ""))
        if user is None or not (include_unreplicated or self._visible(user["id"])):
            return None
        return user

    def manager_of(self, user: dict[str, Any]) -> dict[str, Any] | None:
        manager_id = self.managers.get(user["id"])
        return self.users.get(manager_id) if manager_id else None

    def find_object(self, key: str) -> tuple[str, str] | None:
        user = self.find_user(key)
        if user:
            return ("user", user["id"])
        if self.group(key):
            return ("group", key)
        return None

    def _add_user(self, body: dict[str, Any]) -> dict[str, Any]:
        user = {"id": str(uuid.uuid4()), "accountEnabled": True, **body}
        user.pop("passwordProfile", None)
        self.users[user["id"]] = user
        self.user_ids_by_upn[user["userPrincipalName"].lower()] = user["id"]
        self.visible_at[user["id"]] = time.monotonic() + self.lag_seconds
        self.created.append(("user", user["userPrincipalName"].lower()))
        return user

    # --- request routing -------------------------------------------------------------

    def handle(
        self, method: str, url: str, body: JsonBody, headers: Mapping[str, str] | None = None
    ) -> Answer:
        _finish_team_operations(self)
        path, _, query = url.partition("?")
        path = path.rstrip("/") or "/"
        prefer = next((v for k, v in (headers or {}).items() if k.lower() == "prefer"), "")
        consistency = next((v for k, v in (headers or {}).items() if k.lower() == "consistencylevel"), "")
        extra = {"$query": query, "$prefer": prefer, "$consistency": consistency, "$base": self.base_url}
        for route_method, pattern, handler in ROUTES:
            if route_method != method:
                continue
            match = pattern.match(path)
            if match:
                return handler(self, {**match.groupdict(), **extra}, body)
        return error(400, "BadRequest", f"Resource not found for the segment '{path}' (emulator)")


def seeded_profile(index: int) -> dict[str, Any]:
    """The HR attributes `seed_users(profile=True)` gives user N (benchmarks build files from it)."""
    return {
        "jobTitle": f"Title {index % 40}",
        "department": f"Dept {index % 12}",
        "officeLocation": f"Building {index % 5}",
        "employeeId": f"E{index:06d}",
        "accountEnabled": True,
    }


def seeded_manager(index: int) -> int | None:
    """The index of user N's seeded manager: users 1-10 have none, every ten after share one."""
    return (index - 1) // 10 if index > 10 else None


def _ref_target(body: JsonBody) -> str | None:
    ref = body.get("@odata.id") if isinstance(body, dict) else None
    return ref.rstrip("/").rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _not_found(kind: str, key: str) -> Answer:
    return error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
    )


def create_user(t: Tenant, _: dict[str, str], body: JsonBody) -> Answer:
    if not isinstance(body, dict) or not body.get("userPrincipalName"):
        return error(400, "Request_BadRequest", "Property userPrincipalName is required.")
    if t.find_user(body["userPrincipalName"], include_unreplicated=True):
        return error(
            400,
            "Request_BadRequest",
            "Another object with the same value for property userPrincipalName already exists.",
            [{"code": "ObjectConflict", "target": "userPrincipalName"}],
        )
    return Answer(201, t._add_user(body))


def list_users(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    """`GET /users` with `$select`, `$filter`, `$top`, `$count`, `$expand=manager` and paging
    (emulator.user_queries); users still inside the replication lag are not listed yet."""
    try:
        query = user_queries.parse(p["$query"], consistency_eventual=p["$consistency"].lower() == "eventual")
    except user_queries.QueryError as problem:
        return error(400, "Request_BadRequest", str(problem))

    def visible(user: dict[str, Any]) -> bool:
        return t._visible(user["id"])

    body = user_queries.page(query, t.users.values(), visible, t.find_user, t.manager_of, p["$base"])
    return Answer(200, body)


def get_user(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    user = t.find_user(p["user"])
    if not user:
        return _not_found("user", p["user"])
    try:
        query = user_queries.selected(p["$query"])
    except user_queries.QueryError as problem:
        return error(400, "Request_BadRequest", str(problem))
    if "$select" not in p["$query"].lower().replace("%24", "$") and query.expand_manager is None:
        return Answer(200, user)
    return Answer(200, user_queries.shape(user, query, t.manager_of))


def patch_user(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    user = t.find_user(p["user"])
    if not user:
        return _not_found("user", p["user"])
    if not isinstance(body, dict):
        return error(400, "Request_BadRequest", "A JSON object body is required.")
    if "userPrincipalName" in body:
        t.user_ids_by_upn.pop(user["userPrincipalName"].lower(), None)
        t.user_ids_by_upn[str(body["userPrincipalName"]).lower()] = user["id"]
    # Graph sets a new password but never returns one: `passwordProfile` is not stored.
    user.update({k: v for k, v in body.items() if k not in {"id", "passwordProfile"}})
    return Answer(204)


def delete_user(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    user = t.find_user(p["user"])
    if not user:
        return _not_found("user", p["user"])
    del t.users[user["id"]]
    t.user_ids_by_upn.pop(user["userPrincipalName"].lower(), None)
    return Answer(204)


def set_manager(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    user, target = t.find_user(p["user"]), _ref_target(body)
    manager = t.find_user(target) if target else None
    if not user or not manager:
        return _not_found("user", p["user"] if not user else str(target))
    t.managers[user["id"]] = manager["id"]
    return Answer(204)


def remove_manager(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    user = t.find_user(p["user"])
    if not user or user["id"] not in t.managers:
        return _not_found("manager", p["user"])
    del t.managers[user["id"]]
    return Answer(204)


def get_manager(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    user = t.find_user(p["user"])
    if not user or user["id"] not in t.managers:
        return _not_found("manager", p["user"])
    return Answer(200, t.users[t.managers[user["id"]]])


def assign_license(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    user = t.find_user(p["user"])
    if not user:
        return _not_found("user", p["user"])
    if not user.get("usageLocation"):
        return error(
            400,
            "Request_BadRequest",
            "License assignment failed because service plans have an invalid usage location.",
        )
    sku_ids = {
        str(item.get("skuId")) for item in (body or {}).get("addLicenses", []) if isinstance(item, dict)
    }
    t.licenses.setdefault(user["id"], set()).update(sku_ids)
    t.licenses[user["id"]].difference_update(str(s) for s in (body or {}).get("removeLicenses", []))
    return Answer(200, user)


def create_group(t: Tenant, _: dict[str, str], body: JsonBody) -> Answer:
    if not isinstance(body, dict) or not body.get("displayName") or not body.get("mailNickname"):
        return error(400, "Request_BadRequest", "Properties displayName and mailNickname are required.")
    unique_name = body.get("uniqueName")
    if isinstance(unique_name, str) and unique_name.lower() in t.group_ids_by_unique_name:
        return error(
            400,
            "Request_BadRequest",
            "Another object with the same value for property uniqueName already exists.",
            [{"code": "ObjectConflict", "target": "uniqueName"}],
        )
    bound, refused = _bound(t, body)
    if refused is not None:
        return refused
    return Answer(201, _add_group(t, body, bound))


def _bound(t: Tenant, body: dict[str, Any]) -> tuple[dict[str, list[str]], Answer | None]:
    """The objects `owners@odata.bind` / `members@odata.bind` name, by role (every one must
    exist: Graph refuses the whole create otherwise)."""
    bound: dict[str, list[str]] = {}
    for role in ("owners", "members"):
        urls = body.get(f"{role}@odata.bind", [])
        if not isinstance(urls, list):
            return {}, error(400, "BadRequest", f"{role}@odata.bind must be a collection.")
        ids = []
        for url in urls:
            key = _bound_key(url)
            found = t.find_object(key) if key else None
            if found is None:
                return {}, error(
                    400,
                    "Request_BadRequest",
                    "One or more of the object references referenced in the request don't exist.",
                )
            ids.append(found[1])
        bound[role] = ids
    return bound, None


def _bound_key(url: object) -> str | None:
    """The id in `https://graph.microsoft.com/v1.0/users/{id}`, `.../directoryObjects/{id}` or
    `.../users('{id}')`."""
    if not isinstance(url, str):
        return None
    last = url.rstrip("/").rsplit("/", 1)[-1]
    match = re.fullmatch(r"\w+\('([^']+)'\)", last)
    return unquote(match.group(1) if match else last)


def _add_group(t: Tenant, body: dict[str, Any], bound: dict[str, list[str]] | None = None) -> dict[str, Any]:
    group = {"id": str(uuid.uuid4()), "groupTypes": [], **_without_binds(body)}
    t.groups[group["id"]] = group
    for role, ids in (bound or {}).items():
        (t.owners if role == "owners" else t.members).setdefault(group["id"], set()).update(ids)
    if isinstance(group.get("uniqueName"), str):
        t.group_ids_by_unique_name[group["uniqueName"].lower()] = group["id"]
    t.visible_at[group["id"]] = time.monotonic() + t.lag_seconds
    t.created.append(("group", group["id"]))
    return group


def _without_binds(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not k.lower().endswith("@odata.bind")}


_ODATA_TEXT = re.compile(r"(?:[^']|'')+")


def _unique_name(p: dict[str, str]) -> str | None:
    """The uniqueName in `groups(uniqueName='..')`: percent-decoded, quotes undoubled (None
    when it is not an OData string literal)."""
    text = unquote(p["key"])
    return text.replace("''", "'") if _ODATA_TEXT.fullmatch(text) else None


def _group_by_unique_name(t: Tenant, unique_name: str) -> dict[str, Any] | None:
    group_id = t.group_ids_by_unique_name.get(unique_name.lower())
    return t.groups.get(group_id) if group_id else None


def upsert_group(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    """`PATCH /groups(uniqueName='..')`: Graph's upsert. The group exists: updated, 204 and no
    body. It is missing: with `Prefer: create-if-missing`, created (201 with the group), else
    404 (a plain update of nothing)."""
    unique_name = _unique_name(p)
    if unique_name is None:
        return error(400, "BadRequest", "Invalid key: uniqueName must be a quoted string.")
    if not isinstance(body, dict):
        return error(400, "Request_BadRequest", "A JSON object body is required.")
    bound, refused = _bound(t, body)
    if refused is not None:
        return refused
    group = _group_by_unique_name(t, unique_name)
    if group is not None:
        for role, ids in bound.items():
            held = (t.owners if role == "owners" else t.members).setdefault(group["id"], set())
            if held & set(ids):
                return error(
                    400,
                    "Request_BadRequest",
                    "One or more added object references already exist for the following modified "
                    f"properties: '{role}'.",
                )
        for role, ids in bound.items():
            (t.owners if role == "owners" else t.members)[group["id"]].update(ids)
        group.update({k: v for k, v in _without_binds(body).items() if k not in {"id", "uniqueName"}})
        return Answer(204)
    preferences = {part.strip().lower() for part in re.split(r"[,;]", p.get("$prefer", ""))}
    if "create-if-missing" not in preferences:
        return _not_found("group", unique_name)
    if not body.get("displayName") or not body.get("mailNickname"):
        return error(400, "Request_BadRequest", "Properties displayName and mailNickname are required.")
    return Answer(201, _add_group(t, {**body, "uniqueName": unique_name}, bound))


def get_group_by_unique_name(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    unique_name = _unique_name(p)
    group = _group_by_unique_name(t, unique_name) if unique_name is not None else None
    if group is None or not t._visible(group["id"]):
        return _not_found("group", unique_name or p["key"])
    return Answer(200, group)


def get_group(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    group = t.group(p["group"])
    return Answer(200, group) if group else _not_found("group", p["group"])


def patch_group(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    group = t.group(p["group"])
    if not group:
        return _not_found("group", p["group"])
    group.update(body if isinstance(body, dict) else {})
    return Answer(204)


def add_member(t: Tenant, p: dict[str, str], body: JsonBody, *, role: str = "members") -> Answer:
    group = t.group(p["group"])
    target = _ref_target(body)
    found = t.find_object(target) if target else None
    if not group:
        return _not_found("group", p["group"])
    if not found:
        return error(
            400,
            "Request_BadRequest",
            "One or more of the object references referenced in the request don't exist.",
        )
    bucket = (t.members if role == "members" else t.owners).setdefault(group["id"], set())
    if found[1] in bucket:
        return error(
            400,
            "Request_BadRequest",
            "One or more added object references already exist for the following modified properties: "
            f"'{role}'.",
        )
    bucket.add(found[1])
    return Answer(204)


def list_members(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    if not t.group(p["group"]):
        return _not_found("group", p["group"])
    ids = t.members.get(p["group"], set())
    return Answer(200, {"value": [{"id": i} for i in sorted(ids)]})


def remove_member(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    bucket = t.members.get(p["group"], set())
    if p["member"] not in bucket:
        return _not_found("member", p["member"])
    bucket.discard(p["member"])
    return Answer(204)


def create_team(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    group = t.group(p["group"])
    if not group:
        return _not_found("group", p["group"])
    if "Unified" not in group.get("groupTypes", []):
        return error(400, "BadRequest", "Group must be a Microsoft 365 (Unified) group to create a team.")
    if p["group"] in t.teams:
        return error(409, "Conflict", "Team already exists for this group.")
    if (ownerless := _ownerless(t, p["group"])) is not None:
        return ownerless
    team = {
        "id": p["group"],
        "displayName": group.get("displayName"),
        **(body if isinstance(body, dict) else {}),
    }
    t.teams[p["group"]] = team
    t.channels[p["group"]] = [{"id": f"19:general-{p['group']}", "displayName": "General"}]
    t.created.append(("team", p["group"]))
    return Answer(201, team)


def create_teams(t: Tenant, _: dict[str, str], body: JsonBody) -> Answer:
    """`POST /teams`: 202 with no body, the operation in `Location` and the team in
    `Content-Location`. From an existing group (`group@odata.bind`: replicated, Unified, no team
    yet) or from a template, which makes a new group too; with application permissions the
    template form must name a member who is an owner (`members[].user@odata.bind`). The team
    appears when the operation succeeds."""
    if not isinstance(body, dict):
        return error(400, "BadRequest", "A JSON object body is required.")
    channels = [c for c in body.get("channels", []) if isinstance(c, dict) and c.get("displayName")]
    settings = {k: v for k, v in body.items() if k not in {"channels", "members"} and "@odata" not in k}
    group_url = next((v for k, v in body.items() if k.lower() == "group@odata.bind"), None)
    if group_url is not None:
        key = _bound_key(group_url)
        group = t.group(key) if key else None
        if group is None:
            return _not_found("group", str(key))
        if "Unified" not in group.get("groupTypes", []):
            return error(400, "BadRequest", "Group must be a Microsoft 365 (Unified) group to create a team.")
        if group["id"] in t.teams or any(o["team"] == group["id"] for o in t.team_operations.values()):
            return error(409, "Conflict", "Team already exists for this group.")
        if (ownerless := _ownerless(t, group["id"])) is not None:
            return ownerless
        team_id = group["id"]
    else:
        owners = [
            _bound_key(m.get("user@odata.bind"))
            for m in body.get("members", [])
            if isinstance(m, dict) and "owner" in (m.get("roles") or [])
        ]
        users = [t.find_user(o) for o in owners if o]
        if not users or any(u is None for u in users):
            return error(
                400,
                "BadRequest",
                "A team created with application permissions needs a member with the owner role.",
            )
        name = str(body.get("displayName") or "team")
        nickname = re.sub(r"[^A-Za-z0-9]", "", name)[:40] or "team"
        ids = [u["id"] for u in users if u is not None]
        group = _add_group(
            t,
            {"displayName": name, "mailNickname": nickname, "groupTypes": ["Unified"]},
            {"owners": ids, "members": ids},
        )
        team_id = group["id"]
    operation_id = str(uuid.uuid4())
    t.team_operations[operation_id] = {
        "team": team_id,
        "settings": settings,
        "channels": channels,
        "ready_at": time.monotonic() + t.team_operation_seconds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    t.created.append(("team", team_id))
    return Answer(202, None, _operation_headers(t.location_form, team_id, operation_id))


def _ownerless(t: Tenant, group_id: str) -> Answer | None:
    """Graph's refusal of a team on a group without owners, when that rule is on."""
    if t.team_requires_owner and not t.owners.get(group_id):
        return error(400, "BadRequest", "A team can only be created from a group with at least one owner.")
    return None


def _operation_headers(form: str, team_id: str, operation_id: str) -> dict[str, str]:
    if form == "bare":
        location = f"/teams({team_id})/operations({operation_id})"
    elif form == "segments":
        location = f"/teams/{team_id}/operations/{operation_id}"
    else:
        location = f"/teams('{team_id}')/operations('{operation_id}')"
    if form == "absolute":
        location = f"https://graph.microsoft.com/v1.0{location}"
    return {"Location": location, "Content-Location": f"/teams('{team_id}')"}


def _finish_team_operations(t: Tenant) -> None:
    """Operations whose time has come end as configured; a succeeded one's team now exists."""
    now = time.monotonic()
    for operation in t.team_operations.values():
        if "status" in operation or now < operation["ready_at"]:
            continue
        operation["status"] = t.team_outcome
        if t.team_outcome != "succeeded":
            continue
        team_id = operation["team"]
        group = t.groups.get(team_id, {})
        t.teams[team_id] = {"id": team_id, "displayName": group.get("displayName"), **operation["settings"]}
        t.channels[team_id] = [
            {"id": f"19:general-{team_id}", "displayName": "General"},
            *({"id": f"19:{uuid.uuid4().hex}@thread.tacv2", **c} for c in operation["channels"]),
        ]


def get_team_operation(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    operation = t.team_operations.get(unquote(p["operation"]))
    if operation is None or operation["team"] != unquote(p["team"]):
        return _not_found("operation", p["operation"])
    status = operation.get("status", "inProgress")
    failed = status == "failed"
    return Answer(
        200,
        {
            "id": unquote(p["operation"]),
            "operationType": "createTeam",
            "createdDateTime": operation["created"],
            "status": status,
            "lastActionDateTime": operation["created"],
            "attemptsCount": 1,
            "targetResourceId": operation["team"],
            "targetResourceLocation": f"/teams('{operation['team']}')",
            "error": {"code": "InternalServerError", "message": "Team creation failed."} if failed else None,
        },
    )


def get_team(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    team = t.teams.get(p["team"])
    return Answer(200, team) if team else _not_found("team", p["team"])


def create_channel(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    if p["team"] not in t.teams:
        return _not_found("team", p["team"])
    name = body.get("displayName") if isinstance(body, dict) else None
    if not name:
        return error(400, "BadRequest", "displayName is required.")
    if any(c["displayName"].lower() == name.lower() for c in t.channels[p["team"]]):
        # Names are unique in a team; Graph's answer as it is seen (its docs name none).
        return error(400, "BadRequest", "Channel name already existed, please use other name.")
    channel = {"id": f"19:{uuid.uuid4().hex}@thread.tacv2", **body}
    t.channels[p["team"]].append(channel)
    t.created.append(("channel", f"{p['team']}/{name.lower()}"))
    return Answer(201, channel)


_DISPLAY_NAME_FILTER = re.compile(r"\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)


def list_channels(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    """The team's channels; `$filter=displayName eq '..'` (quotes doubled) is the one filter
    understood, matched ignoring case as Teams compares channel names."""
    if p["team"] not in t.teams:
        return _not_found("team", p["team"])
    channels = t.channels[p["team"]]
    for option in p.get("$query", "").split("&"):
        name, _, value = option.partition("=")
        if unquote(name) != "$filter":
            continue
        match = _DISPLAY_NAME_FILTER.fullmatch(unquote(value))
        if match is None:
            return error(400, "BadRequest", "Only $filter=displayName eq '...' is supported (emulator).")
        wanted = match.group(1).replace("''", "'").lower()
        channels = [c for c in channels if str(c.get("displayName", "")).lower() == wanted]
    return Answer(200, {"value": channels})


def _calendar_owner(t: Tenant, p: dict[str, str]) -> str | None:
    """The id of the user or group whose calendar the path names (by id or UPN), or None."""
    if "user" in p:
        user = t.find_user(p["user"])
        return str(user["id"]) if user else None
    group = t.group(p["group"])
    return str(group["id"]) if group else None


def create_event(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    """An event; a `transactionId` already used in this calendar creates nothing more: Graph
    documents the property as the way "to avoid redundant POST operations in case of client
    retries to create the same event". The same request again is answered 201 with the event
    it created; another event under a used transactionId gets Graph's error as it is seen,
    400 `ErrorDuplicateTransactionId` naming the existing event."""
    owner = _calendar_owner(t, p)
    if owner is None:
        return _not_found("owner", p.get("user") or p.get("group") or "")
    transaction = body.get("transactionId") if isinstance(body, dict) else None
    if isinstance(transaction, str) and (owner, transaction) in t.event_transactions:
        event_id, first_body = t.event_transactions[(owner, transaction)]
        if body == first_body:
            return Answer(201, next(e for e in t.events[owner] if e["id"] == event_id))
        duplicate = error(
            400,
            "ErrorDuplicateTransactionId",
            "Your request can't be completed. The TransactionId specified in the request has "
            "already been used to create a different event.",
        )
        duplicate.body["error"]["@event.existingEventId"] = event_id
        return duplicate
    event = {"id": str(uuid.uuid4()), **(body if isinstance(body, dict) else {})}
    t.events.setdefault(owner, []).append(event)
    if isinstance(transaction, str):
        t.event_transactions[(owner, transaction)] = (event["id"], body)
    t.created.append(("event", event["id"]))
    return Answer(201, event)


def get_event(t: Tenant, p: dict[str, str], _: JsonBody) -> Answer:
    owner = _calendar_owner(t, p)
    wanted = unquote(p["event"])
    event = next((e for e in t.events.get(owner or "", []) if e["id"] == wanted), None)
    return Answer(200, event) if event else _not_found("event", p["event"])


def add_calendar_permission(t: Tenant, p: dict[str, str], body: JsonBody) -> Answer:
    user = t.find_user(p["user"])
    if not user:
        return _not_found("user", p["user"])
    permission = {"id": str(uuid.uuid4()), **(body if isinstance(body, dict) else {})}
    t.calendar_permissions.setdefault(user["id"], []).append(permission)
    return Answer(201, permission)


_SEG = r"[^/]+"


def _route(method: str, template: str, handler: Handler) -> tuple[str, re.Pattern[str], Handler]:
    regex = re.sub(
        r"\{(\w+)\}",
        lambda m: f"(?P<{m.group(1)}>{_SEG})",
        re.escape(template).replace(r"\{", "{").replace(r"\}", "}"),
    )
    return (method, re.compile(f"^{regex}$", re.IGNORECASE), handler)


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    _route("POST", "/users", create_user),
    _route("GET", "/users", list_users),
    _route("GET", "/users/{user}", get_user),
    _route("PATCH", "/users/{user}", patch_user),
    _route("DELETE", "/users/{user}", delete_user),
    _route("PUT", "/users/{user}/manager/$ref", set_manager),
    _route("DELETE", "/users/{user}/manager/$ref", remove_manager),
    _route("GET", "/users/{user}/manager", get_manager),
    _route("POST", "/users/{user}/assignLicense", assign_license),
    _route("POST", "/users/{user}/events", create_event),
    _route("GET", "/users/{user}/events/{event}", get_event),
    _route("POST", "/users/{user}/calendar/calendarPermissions", add_calendar_permission),
    _route("POST", "/groups", create_group),
    _route("PATCH", "/groups(uniqueName='{key}')", upsert_group),
    _route("GET", "/groups(uniqueName='{key}')", get_group_by_unique_name),
    _route("GET", "/groups/{group}", get_group),
    _route("PATCH", "/groups/{group}", patch_group),
    _route("POST", "/groups/{group}/members/$ref", add_member),
    _route("GET", "/groups/{group}/members", list_members),
    _route("DELETE", "/groups/{group}/members/{member}/$ref", remove_member),
    _route("POST", "/groups/{group}/owners/$ref", lambda t, p, b: add_member(t, p, b, role="owners")),
    _route("PUT", "/groups/{group}/team", create_team),
    _route("POST", "/groups/{group}/events", create_event),
    _route("GET", "/groups/{group}/events/{event}", get_event),
    _route("POST", "/teams", create_teams),
    _route("GET", "/teams/{team}", get_team),
    _route("GET", "/teams/{team}/operations/{operation}", get_team_operation),
    _route("GET", "/teams/{team}/channels", list_channels),
    _route("POST", "/teams/{team}/channels", create_channel),
]
