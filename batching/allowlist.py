"""The Graph operations this app will send on behalf of its managed identity.

The identity holds tenant-wide write permissions, so nothing outside this list is sent,
whatever a message asks for. Each entry names the application permission it needs; the
Bicep template grants exactly the union of those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# One path segment: an object id, a userPrincipalName, or a URL-encoded key. Never empty,
# never a dot segment, never a separator or query character.
_SEGMENT = r"(?!\.\.?(?:/|$))[^/?#\\\s]+"


@dataclass(frozen=True, slots=True)
class AllowedOperation:
    """One method on one Graph path shape, and the permission it needs."""

    method: str
    template: str
    permission: str

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = re.escape(self.template).replace(re.escape("{id}"), _SEGMENT)
        return re.compile(rf"^{regex}$", re.IGNORECASE)


ALLOWED_OPERATIONS: Final[tuple[AllowedOperation, ...]] = (
    # Users
    AllowedOperation("GET", "/users", "User.ReadWrite.All"),
    AllowedOperation("POST", "/users", "User.ReadWrite.All"),
    AllowedOperation("GET", "/users/{id}", "User.ReadWrite.All"),
    AllowedOperation("PATCH", "/users/{id}", "User.ReadWrite.All"),
    AllowedOperation("DELETE", "/users/{id}", "User.ReadWrite.All"),
    AllowedOperation("GET", "/users/{id}/manager", "User.ReadWrite.All"),
    AllowedOperation("PUT", "/users/{id}/manager/$ref", "User.ReadWrite.All"),
    AllowedOperation("DELETE", "/users/{id}/manager/$ref", "User.ReadWrite.All"),
    AllowedOperation("POST", "/users/{id}/assignLicense", "LicenseAssignment.ReadWrite.All"),
    AllowedOperation("GET", "/users/{id}/memberOf", "User.ReadWrite.All"),
    # Groups and membership
    AllowedOperation("GET", "/groups", "Group.ReadWrite.All"),
    AllowedOperation("POST", "/groups", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/groups/{id}", "Group.ReadWrite.All"),
    AllowedOperation("PATCH", "/groups/{id}", "Group.ReadWrite.All"),
    AllowedOperation("DELETE", "/groups/{id}", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/groups/{id}/members", "Group.ReadWrite.All"),
    AllowedOperation("POST", "/groups/{id}/members/$ref", "Group.ReadWrite.All"),
    AllowedOperation("DELETE", "/groups/{id}/members/{id}/$ref", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/groups/{id}/owners", "Group.ReadWrite.All"),
    AllowedOperation("POST", "/groups/{id}/owners/$ref", "Group.ReadWrite.All"),
    AllowedOperation("DELETE", "/groups/{id}/owners/{id}/$ref", "Group.ReadWrite.All"),
    # Teams and channels
    AllowedOperation("PUT", "/groups/{id}/team", "Team.Create"),
    AllowedOperation("POST", "/teams", "Team.Create"),
    AllowedOperation("GET", "/teams/{id}", "Group.ReadWrite.All"),
    AllowedOperation("GET", "/teams/{id}/channels", "Channel.Create"),
    AllowedOperation("POST", "/teams/{id}/channels", "Channel.Create"),
    # Calendars
    AllowedOperation("POST", "/users/{id}/events", "Calendars.ReadWrite"),
    AllowedOperation("POST", "/groups/{id}/events", "Calendars.ReadWrite"),
    AllowedOperation("GET", "/users/{id}/calendar/calendarPermissions", "Calendars.ReadWrite"),
    AllowedOperation("POST", "/users/{id}/calendar/calendarPermissions", "Calendars.ReadWrite"),
    AllowedOperation("PATCH", "/users/{id}/calendar/calendarPermissions/{id}", "Calendars.ReadWrite"),
)

_COMPILED: Final = tuple((op, op.pattern) for op in ALLOWED_OPERATIONS)


def find_allowed(method: str, path: str) -> AllowedOperation | None:
    """The allow-list entry for `method path` (path without query string), if any."""
    for op, pattern in _COMPILED:
        if op.method == method and pattern.match(path):
            return op
    return None


def required_permissions() -> frozenset[str]:
    """Every Graph application permission the allow-listed operations need."""
    return frozenset(op.permission for op in ALLOWED_OPERATIONS)
