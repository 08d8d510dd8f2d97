"""The Power Automate custom connector's API definition, served by the app itself.

`connector/apiDefinition.swagger.json` is the one definition: the file makers import with
paconn or `pac connector create`, the file the tests check against the connector rules and
against the routes function_app.py declares, and what `GET /api/openapi.json` answers. The
file keeps a placeholder host, as connector definitions do; the served copy names the host,
scheme and base path of the app that answers (or of PUBLIC_BASE_URL when it is set), so it can
be imported from the app's own URL as it is.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import azure.functions as func

CONNECTOR_DIR: Final = Path(__file__).resolve().parents[2] / "connector"
DEFINITION_FILE: Final = CONNECTOR_DIR / "apiDefinition.swagger.json"
PROPERTIES_FILE: Final = CONNECTOR_DIR / "apiProperties.json"
# The Functions host's route prefix (host.json sets no other): every HTTP route is under it.
ROUTE_PREFIX: Final = "/api"


@functools.cache
def _definition_text() -> str:
    return DEFINITION_FILE.read_text(encoding="utf-8")


def definition() -> dict[str, Any]:
    """The definition as the file holds it (placeholder host), a fresh copy on every call."""
    document: dict[str, Any] = json.loads(_definition_text())
    return document


def for_base_url(document: dict[str, Any], base_url: str) -> dict[str, Any]:
    """`document` with `host`, `schemes` and `basePath` of the app served at `base_url`
    (`https://host[:port][/prefix]`); everything else as it is."""
    parts = urlsplit(base_url)
    return {
        **document,
        "host": parts.netloc,
        "schemes": [parts.scheme],
        "basePath": parts.path.rstrip("/") + ROUTE_PREFIX,
    }


def served_definition(request_url: str, public_base_url: str | None) -> dict[str, Any]:
    """The definition for the app that got `request_url`: the request's own scheme and host,
    or PUBLIC_BASE_URL when set (as status URLs are built)."""
    parts = urlsplit(request_url)
    return for_base_url(definition(), public_base_url or f"{parts.scheme}://{parts.netloc}")


def definition_response(req: func.HttpRequest) -> func.HttpResponse:
    """`GET /api/openapi.json` (anonymous: the definition holds no data)."""
    from batching.settings import get_settings

    document = served_definition(req.url, get_settings().public_base_url)
    return func.HttpResponse(json.dumps(document, indent=2), status_code=200, mimetype="application/json")
