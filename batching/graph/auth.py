"""Tokens for Graph, and the policy that sends them to the Graph host and nowhere else.

The managed identity can change every user and group in the tenant, so the token is attached
only to requests for the configured Graph origin, and that origin must be a real Graph cloud
(or loopback, for the local emulator, with a credential that cannot mint real tokens).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncGenerator
from typing import Any, Final, Protocol

import httpx
from azure.core.credentials import AccessToken

from batching.allowlist import GRAPH_HOSTS
from batching.settings import Settings

# Graph's national clouds (one list, in the allow-list module); a token for one of them is
# only ever sent to that host.
REFRESH_MARGIN_SECONDS: Final = 300


class UnsafeGraphEndpoint(ValueError):
    """GRAPH_BASE_URL is not an endpoint this credential may send a token to."""


class TokenCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...

    async def close(self) -> None: ...


def is_loopback(url: httpx.URL) -> bool:
    host = url.host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_graph_endpoint(base_url: str, credential_kind: str) -> httpx.URL:
    """The Graph base URL, if the chosen credential may send tokens there."""
    url = httpx.URL(base_url)
    if credential_kind == "emulator":
        if not is_loopback(url):
            raise UnsafeGraphEndpoint(
                f"GRAPH_CREDENTIAL=emulator only talks to a loopback GRAPH_BASE_URL, not {url.host!r}"
            )
        return url
    if url.scheme != "https" or url.host not in GRAPH_HOSTS:
        raise UnsafeGraphEndpoint(
            f"GRAPH_BASE_URL must be https on a Microsoft Graph host ({', '.join(sorted(GRAPH_HOSTS))}), "
            f"not {url.scheme}://{url.host}"
        )
    return url


def graph_scope(base_url: httpx.URL) -> str:
    """`https://graph.microsoft.com/.default` for the public cloud; the same shape elsewhere."""
    host = base_url.host if base_url.host in GRAPH_HOSTS else "graph.microsoft.com"
    return f"https://{host}/.default"


class EmulatorCredential:
    """A stand-in token for the local Graph emulator; refuses any non-loopback endpoint."""

    def __init__(self, base_url: str) -> None:
        check_graph_endpoint(base_url, "emulator")

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("emulator-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


def build_credential(settings: Settings) -> TokenCredential:
    """The Graph credential the settings ask for, after checking the endpoint is safe for it."""
    check_graph_endpoint(settings.graph_base_url, settings.graph_credential)
    if settings.graph_credential == "emulator":
        return EmulatorCredential(settings.graph_base_url)
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if settings.azure_client_id:
        return ManagedIdentityCredential(client_id=settings.azure_client_id)
    return DefaultAzureCredential()


class GraphTokenAuth(httpx.Auth):
    """Adds a cached bearer token to requests for the Graph origin; refuses any other origin."""

    def __init__(self, credential: TokenCredential, base_url: httpx.URL) -> None:
        self._credential = credential
        self._origin = (base_url.scheme, base_url.host, base_url.port)
        self._scope = graph_scope(base_url)
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if (request.url.scheme, request.url.host, request.url.port) != self._origin:
            raise UnsafeGraphEndpoint(f"refusing to send the Graph token to {request.url.host!r}")
        request.headers["Authorization"] = f"Bearer {await self._current_token()}"
        yield request

    async def _current_token(self) -> str:
        async with self._lock:
            if self._token is None or self._token.expires_on - time.time() < REFRESH_MARGIN_SECONDS:
                self._token = await self._credential.get_token(self._scope)
            return self._token.token
