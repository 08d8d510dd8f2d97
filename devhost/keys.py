"""Function keys, enforced the way the Azure Functions host enforces them.

In Azure, an HTTP function's `authLevel` decides what a request must carry: `anonymous`
nothing, `function` a function key or a host key (the master key also does), `admin` the
master key. The key travels in the `x-functions-key` header or the `code` query parameter;
when the header is present it is the one used, whatever `code` says. A request without a
valid key is answered 401 with an empty body, and the function never runs.

Locally the host keys come from `DEVHOST_HOST_KEY` (the environment, or `Values` in
local.settings.json), else from `local.keys.json`, written on the first start with a new
random key and read on every start after (git-ignored, never deployed). The file has the
shape of `az functionapp keys list`: `{"functionKeys": {"default": "..."}, "masterKey": null}`;
every value under `functionKeys` is a host key, and a `masterKey` may be added by hand.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

KEY_SETTING: Final = "DEVHOST_HOST_KEY"
KEYS_FILE: Final = "local.keys.json"
KEY_HEADER: Final = "x-functions-key"
KEY_QUERY: Final = "code"

AuthLevel = Literal["anonymous", "function", "admin"]
_LEVELS: Final[dict[str, AuthLevel]] = {"anonymous": "anonymous", "function": "function", "admin": "admin"}


def new_key() -> str:
    """32 random bytes, URL-safe base64 (as Functions generates its keys), without padding."""
    return secrets.token_urlsafe(32)


def auth_level(trigger: dict[str, Any]) -> AuthLevel:
    """An httpTrigger binding's level; `function` when unset, the Functions default."""
    level = str(trigger.get("authLevel") or "function").lower()
    if level not in _LEVELS:
        raise ValueError(f"httpTrigger authLevel {level!r} is not anonymous, function or admin")
    return _LEVELS[level]


def presented_key(header_values: Sequence[str], code_values: Sequence[str]) -> str | None:
    """The key a request carries: the first `x-functions-key` header if there is one (even an
    empty one), else the first `code` query value."""
    if header_values:
        return header_values[0]
    if code_values:
        return code_values[0]
    return None


def _same(presented: bytes, key: str) -> bool:
    return hmac.compare_digest(presented, key.encode("utf-8"))


@dataclass(frozen=True)
class HostKeys:
    function_keys: tuple[str, ...]
    master_key: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.function_keys or not all(self.function_keys):
            raise ValueError(f"{self.source or 'host keys'}: at least one non-empty function key is needed")

    @property
    def default(self) -> str:
        return self.function_keys[0]

    def allows(self, level: AuthLevel, presented: str | None) -> bool:
        if level == "anonymous":
            return True
        if not presented:
            return False
        given = presented.encode("utf-8", errors="surrogatepass")
        master = self.master_key is not None and _same(given, self.master_key)
        if level == "admin":
            return master
        # Compare with every key, so the time taken does not tell which one nearly matched.
        matches = [_same(given, key) for key in self.function_keys]
        return master or any(matches)


def load_or_create(path: Path) -> HostKeys:
    """The keys in `path`; on the first start, a new default host key written there (0600)."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({"functionKeys": {"default": new_key()}, "masterKey": None}, file, indent=2)
            file.write("\n")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        keys = document["functionKeys"]
        master = document.get("masterKey")
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise TypeError("functionKeys must map names to keys")
        if master is not None and not isinstance(master, str):
            raise TypeError("masterKey must be a key or null")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path.name} is not a keys file ({error}); delete it to have a new key written"
        ) from error
    return HostKeys(tuple(keys.values()), master or None, source=path.name)


def host_keys(root: Path) -> HostKeys:
    """`DEVHOST_HOST_KEY` when set, else the keys file in the project folder."""
    configured = os.environ.get(KEY_SETTING, "").strip()
    if configured:
        return HostKeys((configured,), source=KEY_SETTING)
    return load_or_create(root / KEYS_FILE)
