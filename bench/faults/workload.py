"""The work a fault run sends: jobs that create users and groups and chain member references to
them, every object with a name of its own, so an object made twice is visible by its name.

A job of 20 operations (`JOB_SIZE`):

- `u1`..`u8`: `POST /users`, userPrincipalName `<job key>-u<k>@contoso.com`;
- `g1`, `g2`: `POST /groups`, displayName `Fault <job key> g<k>`, mailNickname `<job key>-g<k>`,
  and in the `uniqueName` variant uniqueName = the mailNickname (a create that can be made
  safe to repeat); the `no uniqueName` variant has none (a create that cannot);
- `m1`..`m10`: `POST /groups/{{g.id}}/members/$ref` with `{{u.id}}` (or `{{g2.id}}`: a group in
  a group) chained to objects created earlier in the same job.

The job key `flt<run>-<scenario>-<n>` is in every name, so whatever Graph received or holds maps
back to its job (`job_of`). Jobs alternate between the variants, and between the HTTP door and
the queue door, so each variant goes through both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Operation = dict[str, Any]
Variant = Literal["uniqueName", "no uniqueName"]
Door = Literal["http", "queue"]

JOB_SIZE = 20
USERS_PER_JOB = 8
DOMAIN = "contoso.com"
OBJECT_URL = "https://graph.microsoft.com/v1.0/directoryObjects/"
VARIANTS: tuple[Variant, Variant] = ("uniqueName", "no uniqueName")
# (member, group) of each reference, by operation id.
REFERENCES = (
    [(f"u{k}", "g1") for k in range(1, 5)]
    + [(f"u{k}", "g2") for k in range(5, 9)]
    + [("g2", "g1"), ("u1", "g2")]
)
_JOB_KEY = re.compile(r"(?P<key>flt[0-9a-f]{6}-[a-z0-9]+-\d{4})")  # no object id looks like it


@dataclass(frozen=True)
class Job:
    job_id: str
    key: str  # in every name the job gives an object
    variant: Variant
    door: Door
    operations: list[Operation]

    def document(self) -> dict[str, Any]:
        return {"jobId": self.job_id, "operations": self.operations}


def job_key(run: str, scenario: str, index: int) -> str:
    return f"flt{run}-{scenario}-{index:04d}"


def job_of(text: str) -> str | None:
    """The job key named in `text` (a URL, a body, a name), or None."""
    match = _JOB_KEY.search(text)
    return match.group("key") if match else None


def user(key: str, k: int) -> Operation:
    name = f"{key}-u{k}"
    return {
        "id": f"u{k}",
        "method": "POST",
        "url": "/users",
        "body": {
            "userPrincipalName": f"{name}@{DOMAIN}",
            "displayName": f"Fault {key} u{k}",
            "mailNickname": name,
            "accountEnabled": True,
            "passwordProfile": {"password": f"Fault-{name}-1!", "forceChangePasswordNextSignIn": True},
        },
    }


def group(key: str, k: int, variant: Variant) -> Operation:
    nickname = f"{key}-g{k}"
    body: dict[str, Any] = {
        "displayName": f"Fault {key} g{k}",
        "mailNickname": nickname,
        "mailEnabled": False,
        "securityEnabled": True,
        "groupTypes": [],
    }
    if variant == "uniqueName":
        body["uniqueName"] = nickname
    return {"id": f"g{k}", "method": "POST", "url": "/groups", "body": body}


def reference(index: int, member: str, into: str) -> Operation:
    return {
        "id": f"m{index}",
        "method": "POST",
        "url": f"/groups/{{{{{into}.id}}}}/members/$ref",
        "body": {"@odata.id": f"{OBJECT_URL}{{{{{member}.id}}}}"},
    }


def operations(key: str, variant: Variant) -> list[Operation]:
    return [
        *(user(key, k) for k in range(1, USERS_PER_JOB + 1)),
        group(key, 1, variant),
        group(key, 2, variant),
        *(reference(i, member, into) for i, (member, into) in enumerate(REFERENCES, start=1)),
    ]


def jobs(run: str, scenario: str, count: int) -> list[Job]:
    """At least `count` operations, in whole jobs; variants and doors alternate
    (uniqueName/http, none/http, uniqueName/queue, none/queue, ...)."""
    made = []
    for index in range(-(-count // JOB_SIZE)):
        key = job_key(run, scenario, index)
        variant = VARIANTS[index % 2]
        door: Door = "http" if index % 4 < 2 else "queue"
        made.append(Job(key, key, variant, door, operations(key, variant)))
    return made
