"""Grants the app's managed identity the Microsoft Graph application permissions its allow-list
needs. azd runs it after provisioning (azure.yaml, `postprovision`); `azd hooks run
postprovision` runs it again.

It is safe to run on every `azd up`, including the first, when the identity was created
seconds earlier:

- the grants the identity already holds are read first and left alone (Graph refuses a second
  assignment of the same role, so nothing held is posted again);
- a new identity takes a while to replicate in Entra ID: a 404 on it, and a 400 or 404 answer
  to a grant that names it ("Not a valid reference update", "... does not exist"), are retried
  with a growing wait, up to `Patience.total_seconds`;
- a caller who may not grant application permissions (403) gets one message naming the manual
  route, and a non-zero exit code.

The permissions come from `batching.allowlist` (each allowed operation names the one it needs),
so the identity holds what the app may send and nothing more. Grants it holds beyond that are
reported, never removed. The token is the signed-in azd (or Azure CLI) user's, and it is only
ever sent to the Graph host.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # run by azd as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from azure.core.exceptions import ClientAuthenticationError

from batching.allowlist import required_permissions
from batching.graph.auth import (
    GraphTokenAuth,
    TokenCredential,
    UnsafeGraphEndpoint,
    check_graph_endpoint,
)

GRAPH_APP_ID: Final = "00000003-0000-0000-c000-000000000000"
DEFAULT_GRAPH_BASE_URL: Final = "https://graph.microsoft.com/v1.0"
EXIT_OK: Final = 0
EXIT_NOT_GRANTED: Final = 1
EXIT_INVALID: Final = 2
HAND_GRANT: Final = (
    "Grant them by hand (README, 'Granting the Graph permissions by hand'), or ask a Privileged "
    "Role Administrator to run `azd hooks run postprovision`."
)
SKIP_HINT: Final = "To provision and deploy without granting: azd env set GRANT_GRAPH_PERMISSIONS false."
MANUAL_ROUTE: Final = f"{HAND_GRANT} {SKIP_HINT}"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TRANSIENT: Final = frozenset({429, 500, 502, 503, 504})
_ON: Final = frozenset({"", "true", "1", "yes", "on"})
_OFF: Final = frozenset({"false", "0", "no", "off"})

Sleep = Callable[[float], Awaitable[None]]


class GrantFailed(Exception):
    """Why the permissions were not granted, worded for the person running azd."""

    def __init__(self, message: str, exit_code: int = EXIT_NOT_GRANTED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Patience:
    """How long to wait for a new identity to replicate, or for Graph to answer again."""

    first_wait_seconds: float = 5.0
    max_wait_seconds: float = 60.0
    total_seconds: float = 600.0


DEFAULT_PATIENCE: Final = Patience()


@dataclass(frozen=True, slots=True)
class GrantReport:
    """What the identity holds now, by permission name."""

    granted: tuple[str, ...]
    already_held: tuple[str, ...]
    not_needed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _GraphApp:
    service_principal_id: str
    role_ids: dict[str, str] = field(default_factory=dict)  # permission name -> app role id


class GraphPermissionGrants:
    """Grants application permissions of Microsoft Graph to one service principal, idempotently."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        sleep: Sleep = asyncio.sleep,
        patience: Patience = DEFAULT_PATIENCE,
    ) -> None:
        self._client = client
        self._sleep = sleep
        self._patience = patience

    async def grant(
        self, principal_id: str, permissions: Iterable[str], *, resource_group: str = ""
    ) -> GrantReport:
        """Grant what is missing to the managed identity `principal_id` (of `resource_group`, when given)."""
        wanted = sorted(set(permissions))
        graph = await self._graph_app()
        unknown = [name for name in wanted if name not in graph.role_ids]
        if unknown:
            raise GrantFailed(
                f"Microsoft Graph has no application permission named {', '.join(unknown)}", EXIT_INVALID
            )
        await self._wait_for_identity(principal_id, resource_group)
        held = await self._held_role_ids(principal_id, graph.service_principal_id)
        granted: list[str] = []
        already: list[str] = []
        for name in wanted:
            role_id = graph.role_ids[name]
            if role_id in held or not await self._assign(principal_id, graph.service_principal_id, role_id):
                already.append(name)
            else:
                granted.append(name)
        not_needed = sorted(
            name for name, role_id in graph.role_ids.items() if role_id in held and name not in wanted
        )
        return GrantReport(granted=tuple(granted), already_held=tuple(already), not_needed=tuple(not_needed))

    async def _graph_app(self) -> _GraphApp:
        response = await self._send(
            "GET", f"servicePrincipals(appId='{GRAPH_APP_ID}')", params={"$select": "id,appRoles"}
        )
        if response.status_code != 200:
            raise GrantFailed(f"Graph's own service principal could not be read: {_graph_error(response)}")
        body = response.json()
        roles = {
            role["value"]: role["id"]
            for role in body.get("appRoles", [])
            if "Application" in role.get("allowedMemberTypes", []) and role.get("isEnabled", True)
        }
        return _GraphApp(service_principal_id=body["id"], role_ids=roles)

    async def _wait_for_identity(self, principal_id: str, resource_group: str) -> None:
        """A managed identity created moments ago may not be visible to Graph yet. And these
        permissions reach every user and group: they go to the app's own managed identity only,
        never to another principal an edited azd environment might name."""
        response = await self._send(
            "GET",
            f"servicePrincipals/{principal_id}",
            params={"$select": "id,servicePrincipalType,alternativeNames"},
            still_replicating=lambda r: r.status_code == 404,
        )
        if response.status_code != 200:
            raise GrantFailed(
                f"the identity {principal_id} was not found in Microsoft Entra ID: {_graph_error(response)}"
            )
        body = response.json()
        if body.get("servicePrincipalType") != "ManagedIdentity":
            raise GrantFailed(
                f"{principal_id} is not a managed identity: the Graph permissions go to the app's own "
                "identity only (IDENTITY_PRINCIPAL_ID, an output of the provisioning)",
                EXIT_INVALID,
            )
        marker = f"/resourcegroups/{resource_group.lower()}/providers/microsoft.managedidentity/"
        if resource_group and not any(
            marker in str(name).lower() for name in body.get("alternativeNames", [])
        ):
            raise GrantFailed(
                f"the managed identity {principal_id} is not in the resource group {resource_group}: the "
                "Graph permissions go to the app's own identity only",
                EXIT_INVALID,
            )

    async def _held_role_ids(self, principal_id: str, resource_id: str) -> set[str]:
        held: set[str] = set()
        url: str | None = f"servicePrincipals/{principal_id}/appRoleAssignments"
        params: dict[str, str] | None = {"$select": "appRoleId,resourceId"}
        while url is not None:
            response = await self._send("GET", url, params=params)
            if response.status_code != 200:
                raise GrantFailed(f"the identity's grants could not be read: {_graph_error(response)}")
            body = response.json()
            held.update(a["appRoleId"] for a in body.get("value", []) if a.get("resourceId") == resource_id)
            url, params = body.get("@odata.nextLink"), None
        return held

    async def _assign(self, principal_id: str, resource_id: str, role_id: str) -> bool:
        """Grant one role; False when Graph says the identity holds it already."""
        response = await self._send(
            "POST",
            f"servicePrincipals/{resource_id}/appRoleAssignedTo",
            json={"principalId": principal_id, "resourceId": resource_id, "appRoleId": role_id},
            still_replicating=_still_replicating,
        )
        if response.status_code in (200, 201):
            return True
        if _already_exists(response):
            return False
        raise GrantFailed(f"Microsoft Graph refused the grant: {_graph_error(response)}")

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, str] | None = None,
        still_replicating: Callable[[httpx.Response], bool] = lambda _: False,
    ) -> httpx.Response:
        """One Graph request, tried again while Graph is busy or the identity replicates."""
        waited = 0.0
        attempt = 0
        while True:
            response: httpx.Response | None
            try:
                response = await self._client.request(method, url, params=params, json=json)
            except UnsafeGraphEndpoint as error:
                raise GrantFailed(str(error)) from None
            except httpx.TransportError as error:
                response = None
                problem = f"Microsoft Graph could not be reached ({type(error).__name__})"
            else:
                if response.status_code == 401:
                    raise GrantFailed(
                        f"Microsoft Graph did not accept your sign-in ({_graph_error(response)}): sign in "
                        f"again with `azd auth login` (or `az login`). {MANUAL_ROUTE}"
                    )
                if response.status_code == 403:
                    raise GrantFailed(
                        "you may not grant Microsoft Graph application permissions "
                        f"({_graph_error(response)}): it takes the Privileged Role Administrator "
                        f"or Global Administrator role. {MANUAL_ROUTE}"
                    )
                if response.status_code not in _TRANSIENT and not still_replicating(response):
                    return response
                problem = _graph_error(response)
            wait = self._wait(attempt, response)
            if waited + wait > self._patience.total_seconds:
                raise GrantFailed(
                    f"Microsoft Graph still answers {problem} after {waited:.0f} s of retries. "
                    f"Run `azd hooks run postprovision` again later. {MANUAL_ROUTE}"
                )
            await self._sleep(wait)
            waited += wait
            attempt += 1

    def _wait(self, attempt: int, response: httpx.Response | None) -> float:
        patience = self._patience
        backoff = min(patience.max_wait_seconds, patience.first_wait_seconds * 2.0**attempt)
        retry_after = response.headers.get("Retry-After", "") if response is not None else ""
        if retry_after.strip().isdigit():
            return min(patience.max_wait_seconds, max(1.0, float(retry_after)))
        return backoff


def _graph_error(response: httpx.Response) -> str:
    """Graph's status, error code and message (never a token: Graph does not echo one)."""
    try:
        error: Any = response.json().get("error", {})
    except ValueError:
        error = {}
    code = error.get("code", "") if isinstance(error, dict) else ""
    message = error.get("message", "") if isinstance(error, dict) else ""
    text = " ".join(part for part in (str(code), str(message)[:200]) if part)
    return f"HTTP {response.status_code}" + (f" {text}" if text else "")


def _already_exists(response: httpx.Response) -> bool:
    return response.status_code in (400, 409) and "already exists" in _graph_error(response).lower()


def _still_replicating(response: httpx.Response) -> bool:
    """A grant naming an identity Entra ID does not know everywhere yet (and not a repeat)."""
    return response.status_code in (400, 404) and not _already_exists(response)


def _signed_in_credential(tenant_id: str) -> TokenCredential:
    from azure.identity.aio import AzureCliCredential, AzureDeveloperCliCredential, ChainedTokenCredential

    return ChainedTokenCredential(
        AzureDeveloperCliCredential(tenant_id=tenant_id), AzureCliCredential(tenant_id=tenant_id)
    )


async def grant_graph_permissions(
    principal_id: str,
    base_url: httpx.URL,
    credential: TokenCredential,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep = asyncio.sleep,
    patience: Patience = DEFAULT_PATIENCE,
    resource_group: str = "",
) -> GrantReport:
    """Grant the allow-list's permissions to `principal_id`, with a client whose token goes to Graph only."""
    async with httpx.AsyncClient(
        base_url=base_url,
        auth=GraphTokenAuth(credential, base_url),
        transport=transport,
        timeout=30.0,
        follow_redirects=False,
    ) as client:
        grants = GraphPermissionGrants(client, sleep=sleep, patience=patience)
        try:
            return await grants.grant(principal_id, required_permissions(), resource_group=resource_group)
        except ClientAuthenticationError:
            raise GrantFailed(
                "no Microsoft Graph token could be had from azd or the Azure CLI: sign in with "
                "`azd auth login` (or `az login`) as someone who may grant application permissions. "
                f"{MANUAL_ROUTE}"
            ) from None


def _settings(environ: Mapping[str, str]) -> tuple[str, httpx.URL]:
    principal_id = environ.get("IDENTITY_PRINCIPAL_ID", "").strip()
    if not _GUID.match(principal_id):
        raise GrantFailed(
            "IDENTITY_PRINCIPAL_ID (an output of the provisioning) is missing or not an object id: "
            "run `azd provision` first",
            EXIT_INVALID,
        )
    try:
        base_url = check_graph_endpoint(environ.get("GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE_URL, "azure")
    except UnsafeGraphEndpoint as error:
        raise GrantFailed(str(error), EXIT_INVALID) from None
    return principal_id, base_url


async def _grant_as_signed_in_user(
    principal_id: str,
    base_url: httpx.URL,
    env: Mapping[str, str],
    credential: TokenCredential | None,
    transport: httpx.AsyncBaseTransport | None,
    sleep: Sleep,
    patience: Patience,
) -> GrantReport:
    signed_in = credential or _signed_in_credential(env.get("AZURE_TENANT_ID", ""))
    try:
        return await grant_graph_permissions(
            principal_id,
            base_url,
            signed_in,
            transport=transport,
            sleep=sleep,
            patience=patience,
            resource_group=env.get("AZURE_RESOURCE_GROUP", ""),
        )
    finally:
        if credential is None:
            await signed_in.close()


def main(
    environ: Mapping[str, str] | None = None,
    *,
    credential: TokenCredential | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep = asyncio.sleep,
    patience: Patience = DEFAULT_PATIENCE,
) -> int:
    """Grant, report what the identity holds, and exit 0; or say why not (1, or 2 for bad input)."""
    env = os.environ if environ is None else environ
    switch = env.get("GRANT_GRAPH_PERMISSIONS", "").strip().lower()
    needed = ", ".join(sorted(required_permissions()))
    if switch in _OFF:
        print(f"GRANT_GRAPH_PERMISSIONS is off. The app's identity needs these Graph permissions: {needed}.")
        print(HAND_GRANT)
        return EXIT_OK
    try:
        if switch not in _ON:
            raise GrantFailed("GRANT_GRAPH_PERMISSIONS must be true or false", EXIT_INVALID)
        principal_id, base_url = _settings(env)
        print(f"Microsoft Graph application permissions for the app's identity {principal_id}: {needed}")
        report = asyncio.run(
            _grant_as_signed_in_user(principal_id, base_url, env, credential, transport, sleep, patience)
        )
    except GrantFailed as failure:
        print(f"Graph permissions not granted: {failure}", file=sys.stderr)
        return failure.exit_code
    except (ValueError, KeyError, TypeError) as error:  # an answer not shaped as Graph documents
        print(
            f"Graph permissions not granted: Microsoft Graph answered in an unexpected form "
            f"({type(error).__name__}). {MANUAL_ROUTE}",
            file=sys.stderr,
        )
        return EXIT_NOT_GRANTED
    for name in report.already_held:
        print(f"  already held  {name}")
    for name in report.granted:
        print(f"  granted       {name}")
    for name in report.not_needed:
        print(f"  left alone    {name}: held, but the allow-list does not need it")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
