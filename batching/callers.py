"""Which callers may use the HTTP API: `ALLOWED_CALLER_IDS`, checked against the identity
App Service authentication (Entra ID sign-in, "Easy Auth") passes to the app.

When sign-in is on, App Service validates the caller's token, refuses requests without one,
and hands the token's claims to the app in the `X-MS-CLIENT-PRINCIPAL` header: base64 of
`{"auth_typ": "aad", "claims": [{"typ": ..., "val": ...}], "name_typ": ..., "role_typ": ...}`.
The claims have gone through the platform's default claim mapping, so the object id arrives as
`http://schemas.microsoft.com/identity/claims/objectidentifier` (plain `oid` is read too); the
calling application's client id is `appid` (v1 access tokens) or `azp` (v2). These are the
claims App Service's own `allowedApplications` / `allowedPrincipals.identities` policy reads.

A caller is allowed when any of its application or object ids is on the list. With the list
set, a request without the header, or with one that is not what App Service sends, is refused.
The header is only trustworthy where App Service authentication is on: App Service strips it
from outside requests; without sign-in, anyone can write one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Final

PRINCIPAL_HEADER: Final = "x-ms-client-principal"
APP_ID_CLAIMS: Final = frozenset({"appid", "azp"})
OBJECT_ID_CLAIMS: Final = frozenset({"oid", "http://schemas.microsoft.com/identity/claims/objectidentifier"})
# Far above any real principal (a token's claims, base64): a bigger header is not App Service's.
MAX_PRINCIPAL_CHARS: Final = 64 * 1024
_GUID: Final = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def allowed_ids(setting: str) -> frozenset[str]:
    """`ALLOWED_CALLER_IDS` as a set of lower-case ids (empty: no restriction)."""
    return frozenset(part.strip().lower() for part in setting.split(",") if part.strip())


@dataclass(frozen=True)
class Caller:
    """The caller as App Service authentication saw it (ids lower-case, GUID-shaped only)."""

    app_ids: frozenset[str]
    object_ids: frozenset[str]

    @property
    def ids(self) -> frozenset[str]:
        return self.app_ids | self.object_ids


def read_principal(header: str | None) -> Caller | None:
    """The caller in an `X-MS-CLIENT-PRINCIPAL` header; None when it is missing or malformed."""
    if not header or len(header) > MAX_PRINCIPAL_CHARS:
        return None
    text = header.strip()
    try:
        document = json.loads(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
    except (binascii.Error, ValueError, RecursionError):  # not base64, not UTF-8, not JSON
        return None
    claims = document.get("claims") if isinstance(document, dict) else None
    if not isinstance(claims, list):
        return None
    app_ids: set[str] = set()
    object_ids: set[str] = set()
    for claim in claims:
        if not isinstance(claim, dict):
            return None
        kind, value = claim.get("typ"), claim.get("val")
        if not isinstance(kind, str) or not isinstance(value, str):
            return None
        value = value.strip().lower()
        if not _GUID.fullmatch(value):
            continue
        if kind.lower() in APP_ID_CLAIMS:
            app_ids.add(value)
        elif kind.lower() in OBJECT_ID_CLAIMS:
            object_ids.add(value)
    return Caller(frozenset(app_ids), frozenset(object_ids))


def caller_allowed(allowed: frozenset[str], header: str | None) -> bool:
    """True when the list is empty, or the principal names an application or object on it."""
    if not allowed:
        return True
    caller = read_principal(header)
    return caller is not None and not caller.ids.isdisjoint(allowed)
