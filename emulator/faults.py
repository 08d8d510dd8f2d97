"""Graph failing the way it fails in production, on the emulator's `$batch` endpoint.

Set with `PUT /_emulator/config {"faults": {...}}` (null switches them off, as does a reset);
every key is optional and a share is a probability from 0 to 1:

    {"seed": 7,
     "itemErrors": {"share": 0.3, "answers": [{"status": 503, "acted": false},
                                              {"status": 504, "acted": true}],
                    "methods": ["POST", "PATCH", "PUT", "DELETE"], "retryAfter": null},
     "batchErrors": {"share": 0.05, "status": 503, "retryAfter": null},
     "dropsBeforeActing": {"share": 0.02},
     "dropsAfterActing": {"share": 0.02},
     "lateAnswers": {"share": 0.02, "seconds": 8},
     "noAnswers": {"share": 0.01},
     "missingAnswers": {"share": 0.03, "itemShare": 0.25}}

- `itemErrors`: each item whose method is in `methods` (default: the writes) is answered, with
  probability `share`, by one of `answers` (chosen evenly). `acted: true` means the tenant
  carried the item out first and the answer was lost on the way back (a 504 from a gateway);
  `acted: false` that it was refused before anything happened (a 503).
- Whole calls, one fate per `$batch` call: `batchErrors` (the whole call answered `status`,
  nothing done), `dropsBeforeActing` (the connection is cut before anything is done),
  `dropsAfterActing` (every item is carried out, then the connection is cut), `lateAnswers`
  (every item is carried out, the answer leaves `seconds` later: set it beyond the caller's
  timeout), `noAnswers` (every item is carried out, no answer ever: the call is held until the
  caller hangs up), `missingAnswers` (every item is carried out, the answer leaves out
  `itemShare` of the items, at least one). Their shares add up to at most 1.

Every decision is drawn from one generator seeded with `seed`, in the order calls and items
arrive: the same seed and the same calls give the same faults. Fault counts are served at
`GET /_emulator/faults`. The call log shows them: a faulted call has `fault`; an item has
`acted` (the tenant carried it out) and `tenantStatus` (the tenant's own answer) when the
caller did not get that answer, and `status` null when it got none at all.

`GET /_emulator/creates` reports what the tenant holds per natural key, to count objects made
twice: users per userPrincipalName, groups per displayName, mailNickname and uniqueName, and
member and owner references the tenant accepted per (group, object) pair (from the call log,
so a reference carried out behind a lost answer counts too).
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.tenant import Answer, error

if TYPE_CHECKING:
    from emulator.app import GraphEmulator

WRITES = ("POST", "PATCH", "PUT", "DELETE")
# Whole-call fates, in the order a draw walks them.
CALL_FAULTS = (
    "batchErrors",
    "dropsBeforeActing",
    "dropsAfterActing",
    "lateAnswers",
    "noAnswers",
    "missingAnswers",
)
BEFORE_ACTING = frozenset({"batchErrors", "dropsBeforeActing"})
NO_ANSWER_LIMIT_SECONDS = 900.0  # a held call is let go after this, whether or not the caller left

Finish = Callable[[int, Any], Response]


@dataclass(frozen=True)
class ItemAnswer:
    status: int
    acted: bool


@dataclass(frozen=True)
class FaultSettings:
    """The parsed `faults` option (see the module docstring)."""

    seed: int = 0
    item_share: float = 0.0
    item_answers: tuple[ItemAnswer, ...] = (ItemAnswer(503, False), ItemAnswer(504, True))
    item_methods: frozenset[str] = frozenset(WRITES)
    item_retry_after: str | None = None
    call_shares: Mapping[str, float] = field(default_factory=dict)
    batch_status: int = 503
    batch_retry_after: str | None = None
    late_seconds: float = 10.0
    missing_item_share: float = 0.25

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FaultSettings:
        """ValueError naming the key when the option is not valid."""
        known = {"seed", "itemErrors", *CALL_FAULTS}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        items = _section(raw, "itemErrors")
        answers = tuple(
            ItemAnswer(_status(a.get("status"), "itemErrors.answers"), bool(a.get("acted", False)))
            for a in items.get("answers") or [{"status": 503, "acted": False}, {"status": 504, "acted": True}]
        )
        if not answers:
            raise ValueError("itemErrors.answers must name at least one answer")
        shares = {name: _share(_section(raw, name).get("share", 0), f"{name}.share") for name in CALL_FAULTS}
        if sum(shares.values()) > 1.0 + 1e-9:
            raise ValueError("the whole-call fault shares add up to more than 1")
        batch = _section(raw, "batchErrors")
        late = _section(raw, "lateAnswers")
        missing = _section(raw, "missingAnswers")
        return cls(
            seed=int(raw.get("seed", 0)),
            item_share=_share(items.get("share", 0), "itemErrors.share"),
            item_answers=answers,
            item_methods=frozenset(str(m).upper() for m in items.get("methods") or WRITES),
            item_retry_after=_optional_text(items.get("retryAfter")),
            call_shares=shares,
            batch_status=_status(batch.get("status", 503), "batchErrors.status"),
            batch_retry_after=_optional_text(batch.get("retryAfter")),
            late_seconds=float(late.get("seconds", 10.0)),
            missing_item_share=_share(missing.get("itemShare", 0.25), "missingAnswers.itemShare"),
        )


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object")
    return value


def _share(value: Any, name: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return share


def _status(value: Any, name: str) -> int:
    status = int(value)
    if not 100 <= status <= 599:
        raise ValueError(f"{name}: {status} is not an HTTP status")
    return status


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


class FaultInjector:
    """Draws each call's and each item's fate; holds the generator and the counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.settings: FaultSettings | None = None
        self._random = random.Random(0)
        self.counts: Counter[str] = Counter()

    def configure(self, raw: Mapping[str, Any] | None) -> None:
        settings = FaultSettings.from_json(raw) if raw is not None else None
        with self._lock:
            self.settings = settings
            self._random = random.Random(settings.seed if settings else 0)
            self.counts = Counter()

    def reset(self) -> None:
        self.configure(None)

    def draw(self) -> CallFate:
        """The fate of one `$batch` call, drawn as it arrives."""
        settings = self.settings
        if settings is None:
            return CallFate(self, None, None)
        with self._lock:
            point, fault = self._random.random(), None
            for name in CALL_FAULTS:
                point -= settings.call_shares.get(name, 0.0)
                if point < 0:
                    fault = name
                    break
            if fault is not None:
                self.counts[fault] += 1
        return CallFate(self, settings, fault)

    def item_answer(self, settings: FaultSettings, method: str) -> ItemAnswer | None:
        if settings.item_share <= 0 or method.upper() not in settings.item_methods:
            return None
        with self._lock:
            if self._random.random() >= settings.item_share:
                return None
            chosen = self._random.choice(settings.item_answers)
            self.counts[f"itemErrors {chosen.status} {'acted' if chosen.acted else 'not acted'}"] += 1
            return chosen

    def missing(self, ids: list[str], share: float) -> set[str]:
        """Which item ids an answer leaves out: `share` of them, at least one."""
        count = max(1, round(len(ids) * share))
        with self._lock:
            return set(self._random.sample(ids, min(count, len(ids))))

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"configured": self.settings is not None, "injected": dict(sorted(self.counts.items()))}


@dataclass
class CallFate:
    """What happens to one `$batch` call; the emulator asks it at three points."""

    injector: FaultInjector
    settings: FaultSettings | None
    fault: str | None
    _lost: dict[str, int] = field(default_factory=dict)  # item id -> the tenant's own status
    _refused: set[str] = field(default_factory=set)  # item ids answered an error, never carried out

    @property
    def acts(self) -> bool:
        """False when the call is refused or cut before the tenant does anything."""
        return self.fault not in BEFORE_ACTING

    async def before_acting(
        self, request: Request, record: dict[str, Any], items: list[dict[str, Any]], finish: Finish
    ) -> Response | None:
        """The answer of a call refused or cut before anything was done, else None."""
        if self.acts:
            return None
        record["fault"] = self.fault
        for item in items:
            record["items"].append(
                {"id": item.get("id"), "method": item.get("method"), "url": item.get("url"),
                 "body": item.get("body"), "status": None, "acted": False}
            )  # fmt: skip
        if self.fault == "batchErrors":
            assert self.settings is not None
            refusal = {"error": {"code": "injectedFault", "message": "Injected by the emulator"}}
            response = finish(self.settings.batch_status, refusal)
            if self.settings.batch_retry_after is not None:
                response.headers["Retry-After"] = self.settings.batch_retry_after
                record["retryAfter"] = self.settings.batch_retry_after
            return response
        return await _drop(request, record, finish)

    def item(self, item: dict[str, Any], run: Callable[[], Answer]) -> Answer:
        """One item's answer: the tenant's (`run`), or an injected error given instead of it
        or after it."""
        injected = self.injector.item_answer(self.settings, str(item["method"])) if self.settings else None
        if injected is None:
            return run()
        if injected.acted:
            self._lost[str(item["id"])] = run().status
        else:
            self._refused.add(str(item["id"]))
        answer = error(injected.status, "injectedFault", "Injected by the emulator")
        if self.settings is not None and self.settings.item_retry_after is not None:
            answer.headers["Retry-After"] = self.settings.item_retry_after
        return answer

    async def answer(
        self, request: Request, record: dict[str, Any], responses: list[dict[str, Any]], finish: Finish
    ) -> Response:
        """The call's answer once the tenant has acted: as it is, late, never, cut, or short."""
        for logged in record["items"]:
            item_id = str(logged.get("id"))
            tenant_status = self._lost.get(item_id)
            logged["acted"] = item_id not in self._refused and logged.get("status") != 424
            if tenant_status is not None:
                logged["tenantStatus"] = tenant_status
        if self.fault is None:
            return finish(200, {"responses": responses})
        record["fault"] = self.fault
        assert self.settings is not None
        if self.fault == "missingAnswers":
            ids = [str(r["id"]) for r in responses]
            left_out = self.injector.missing(ids, self.settings.missing_item_share)
            for logged in record["items"]:
                if str(logged.get("id")) in left_out:
                    logged["tenantStatus"] = logged.get("tenantStatus", logged.get("status"))
                    logged["status"] = None
            return finish(200, {"responses": [r for r in responses if str(r["id"]) not in left_out]})
        if self.fault == "lateAnswers":
            await asyncio.sleep(self.settings.late_seconds)
            return finish(200, {"responses": responses})
        for logged in record["items"]:  # no answer: the caller learns nothing of any item
            logged["tenantStatus"] = logged.get("tenantStatus", logged.get("status"))
            logged["status"] = None
        if self.fault == "noAnswers":
            started = time.monotonic()
            while time.monotonic() - started < NO_ANSWER_LIMIT_SECONDS:
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0.25)
        return await _drop(request, record, finish)


async def _drop(request: Request, record: dict[str, Any], finish: Finish) -> Response:
    """Cut the connection without an answer. Served over a socket (uvicorn) the transport is
    aborted; in process (httpx's ASGI transport) the call raises instead, which the caller
    sees as a failed request as well."""
    response = finish(200, None)  # logs the call; never delivered
    record["status"] = None
    owner = getattr(request.receive, "__self__", None)
    transport = getattr(owner, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("connection dropped by the emulator (injected fault)")
    transport.abort()
    await asyncio.sleep(0)  # let the server see the connection gone before it tries to answer
    return response


# --- what the tenant holds per natural key -------------------------------------------------------

_REFERENCE = re.compile(r"^/?groups/([^/?]+)/(members|owners)/\$ref$", re.IGNORECASE)


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def _repeated(counts: Counter[str]) -> dict[str, int]:
    return {key: count for key, count in sorted(counts.items()) if count > 1}


def created_report(
    users: Sequence[Mapping[str, Any]],
    created: Iterable[tuple[str, str]],
    groups: Iterable[Mapping[str, Any]],
    calls: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """Creates per natural key and which keys were created more than once (see the module
    docstring). `created` is the tenant's create log ((kind, key) per create)."""
    user_creates = Counter(key for kind, key in created if kind == "user")
    user_creates.update(  # users the create log does not know (added by hand) count once
        key for u in users if (key := _lower(u.get("userPrincipalName"))) and key not in user_creates
    )
    group_list = [
        {key: g.get(key) for key in ("id", "displayName", "mailNickname", "uniqueName")} for g in groups
    ]
    group_keys = {
        name: Counter(k for g in group_list if (k := _lower(g.get(name))) is not None)
        for name in ("displayName", "mailNickname", "uniqueName")
    }
    accepted: Counter[str] = Counter()
    for call in calls:
        for item in call.get("items") or []:
            match = _REFERENCE.match(str(item.get("url") or "").split("?", 1)[0])
            if str(item.get("method", "")).upper() != "POST" or match is None:
                continue
            status = item.get("tenantStatus", item.get("status"))
            body = item.get("body")
            target = body.get("@odata.id") if isinstance(body, dict) else None
            if isinstance(status, int) and 200 <= status < 300 and isinstance(target, str):
                member = target.rstrip("/").rsplit("/", 1)[-1]
                accepted[f"{match.group(1)}|{match.group(2).lower()}|{member}"] += 1
    return {
        "users": {
            "objects": [{key: u.get(key) for key in ("id", "userPrincipalName")} for u in users],
            "creates": dict(sorted(user_creates.items())),
            "duplicates": _repeated(user_creates),
        },
        "groups": {
            "objects": group_list,
            "duplicates": {name: _repeated(counts) for name, counts in group_keys.items()},
        },
        "references": {"accepted": dict(sorted(accepted.items())), "duplicates": _repeated(accepted)},
    }


def routes(emulator: GraphEmulator) -> list[Route]:
    """`GET /_emulator/faults` and `GET /_emulator/creates`."""

    async def faults(_: Request) -> Response:
        return JSONResponse(emulator.faults.report())

    async def creates(_: Request) -> Response:
        calls = emulator.all_calls()
        with emulator._lock:
            tenant = emulator.tenant
            users = [dict(u) for u in tenant.users.values()]
            groups = [dict(g) for g in tenant.groups.values()]
            created = list(tenant.created)
        return JSONResponse(created_report(users, created, groups, calls))

    return [
        Route("/_emulator/faults", faults, methods=["GET"]),
        Route("/_emulator/creates", creates, methods=["GET"]),
    ]
