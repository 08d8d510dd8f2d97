"""Which URLs a job's results may be POSTed to: the callback allow-list.

A callback URL comes from the caller, so the app would POST wherever it is told; it only does
so to hosts on a list (CALLBACK_ALLOWED_HOSTS). By default that list is where Power Automate
and Logic Apps hand out callback URLs (`listCallbackUrl()`, a webhook's notification URL):

- `*.logic.azure.com`: public cloud, regional hosts such as `prod-12.westeurope.logic.azure.com`;
- `*.logic.azure.us`: Azure Government (Power Automate GCC, GCC High and DoD flows);
- `*.logic.azure.cn`: Azure operated by 21Vianet;
- `*.environment.api.powerplatform.com` and its government counterparts
  (`*.environment.api.gov.powerplatform.microsoft.us`, `*.environment.api.high.powerplatform.microsoft.us`,
  `*.environment.api.appsplatform.us`): the Power Platform API hosts newer flow URLs use.

The setting is a comma-separated list of entries: `default` (the list above), a host name
(`hooks.contoso.com`), a `*.suffix` pattern (any host under the suffix, never the suffix
itself), or an IP address. Without `default` the list replaces the defaults.

Rules beyond the list: https only, except plain http to a loopback address that is itself an
entry (`127.0.0.1`, `::1`, `localhost`: local tests); no user name or password in the URL; no
fragment. When the callback is sent, every address the host name resolves to must be public
(not private, loopback, link-local, shared, reserved or multicast) unless the URL names an
explicitly listed loopback host, and the connection goes to the address that was checked
(`batching.connector.callbacks`), so a name that resolves to an inside address is refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

DEFAULT_CALLBACK_HOSTS: Final = (
    "*.logic.azure.com",
    "*.logic.azure.us",
    "*.logic.azure.cn",
    "*.environment.api.powerplatform.com",
    "*.environment.api.gov.powerplatform.microsoft.us",
    "*.environment.api.high.powerplatform.microsoft.us",
    "*.environment.api.appsplatform.us",
)
DEFAULT_ENTRY: Final = "default"
MAX_CALLBACK_URL_LENGTH: Final = 4096
LOOPBACK_NAMES: Final = frozenset({"localhost"})

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_NAME: Final = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_NOT_URL_TEXT: Final = re.compile(r"[\x00-\x20\x7f-\x9f\\]")


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """The hosts callbacks may go to: exact names or addresses, and `*.suffix` patterns."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]  # each with its leading dot: ".logic.azure.com"

    @classmethod
    def parse(cls, setting: str) -> AllowedHosts:
        """The CALLBACK_ALLOWED_HOSTS setting; empty means `default`. Raises ValueError naming a
        bad entry (settings are the operator's, not a caller's)."""
        entries = [entry.strip().lower() for entry in setting.replace(";", ",").split(",")]
        entries = [entry for entry in entries if entry] or [DEFAULT_ENTRY]
        exact: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            for item in DEFAULT_CALLBACK_HOSTS if entry == DEFAULT_ENTRY else (entry,):
                if item.startswith("*."):
                    if not _HOST_NAME.fullmatch(item[2:]) or "." not in item[2:]:
                        raise ValueError(f"CALLBACK_ALLOWED_HOSTS: {item!r} is not a *.domain pattern")
                    suffixes.append(item[1:])
                elif _is_ip(item) or _HOST_NAME.fullmatch(item):
                    exact.add(_normal_host(item))
                else:
                    raise ValueError(f"CALLBACK_ALLOWED_HOSTS: {item!r} is not a host name or address")
        return cls(frozenset(exact), tuple(dict.fromkeys(suffixes)))

    def allows(self, host: str) -> bool:
        """Whether `host` (lower case, an IPv6 address without brackets) is on the list.
        Patterns match names only, never addresses."""
        if host in self.exact:
            return True
        return not _is_ip(host) and any(host.endswith(suffix) for suffix in self.suffixes)

    def allows_loopback(self, host: str) -> bool:
        """Whether `host` is a loopback address or `localhost` listed by itself: the only hosts
        a callback may reach over plain http, or at a loopback address."""
        return host in self.exact and (host in LOOPBACK_NAMES or (_is_ip(host) and _ip(host).is_loopback))


def callback_url_problems(url: str, allowed: AllowedHosts) -> list[str]:
    """Why `url` may not receive a callback; empty when it may. Never repeats the URL."""
    if len(url) > MAX_CALLBACK_URL_LENGTH:
        return [f"must be at most {MAX_CALLBACK_URL_LENGTH} characters"]
    if _NOT_URL_TEXT.search(url) or not url.isascii():
        return ["must be an absolute URL without spaces, control characters or backslashes"]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ["must be an absolute https URL"]
    host = _normal_host((parts.hostname or "").lower())
    if parts.scheme not in {"https", "http"} or not host:
        return ["must be an absolute https URL"]
    if parts.username is not None or parts.password is not None:
        return ["may not carry a user name or password"]
    if parts.fragment or "#" in url:
        return ["may not have a fragment (#...)"]
    if port == 0:
        return ["must name a valid port"]
    if not allowed.allows(host):
        return ["names a host that is not on the callback allow-list (CALLBACK_ALLOWED_HOSTS)"]
    if parts.scheme == "http" and not allowed.allows_loopback(host):
        return ["must use https (plain http only to a loopback host listed by itself)"]
    return []


def callback_host(url: str) -> str:
    """The host a callback goes to, for log lines: never the path or query (they carry the
    signature that lets anyone post to the flow)."""
    try:
        return (urlsplit(url).hostname or "?").lower()
    except ValueError:
        return "?"


def is_public_address(address: str) -> bool:
    """An address a callback may connect to without being listed by itself."""
    ip = _ip(address)
    return ip.is_global and not ip.is_multicast


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_ip(text: str) -> bool:
    try:
        _ip(text)
    except ValueError:
        return False
    return True


def _normal_host(host: str) -> str:
    return str(_ip(host)) if _is_ip(host) else host
