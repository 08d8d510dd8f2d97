"""The work the scenarios send, in the job document's operation shape (also what Graph takes)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from typing import Any

Operation = dict[str, Any]


def run_id() -> str:
    """A short id that keeps one run's user names apart from another's."""
    return uuid.uuid4().hex[:8]


def user_creates(run: str, count: int) -> list[Operation]:
    """`POST /users` for bench-<run>-<n>@contoso.com, n = 1..count."""
    return [
        {
            "id": f"c{n}",
            "method": "POST",
            "url": "/users",
            "body": {
                "userPrincipalName": f"bench-{run}-{n}@contoso.com",
                "displayName": f"Bench {run} {n}",
                "mailNickname": f"bench-{run}-{n}",
                "accountEnabled": True,
                "passwordProfile": {
                    "password": secrets.token_urlsafe(12) + "aA1!",
                    "forceChangePasswordNextSignIn": True,
                },
            },
        }
        for n in range(1, count + 1)
    ]


def user_patches(first: int, count: int, changes: dict[str, Any]) -> list[Operation]:
    """`PATCH /users/user<n>@contoso.com` for seeded users first..first+count-1."""
    return [
        {"id": f"p{n}", "method": "PATCH", "url": f"/users/user{n}@contoso.com", "body": dict(changes)}
        for n in range(first, first + count)
    ]


def title_csv(rows: int) -> bytes:
    """A bulk-update file giving seeded users user1..user<rows> a job title."""
    lines = ["userPrincipalName,jobTitle", *(f"user{n}@contoso.com,Title {n}" for n in range(1, rows + 1))]
    return ("\n".join(lines) + "\n").encode()


def chunks(ops: Sequence[Operation], size: int) -> list[list[Operation]]:
    return [list(ops[start : start + size]) for start in range(0, len(ops), size)]
