"""The connector definition as the running app serves it, through the dev host: open to
everyone, and the very file the connector is imported from, with the answering host."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from devhost.stack import DevHost

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((ROOT / "connector" / "apiDefinition.swagger.json").read_text(encoding="utf-8"))
HOST_FIELDS = {"host", "schemes", "basePath"}


@pytest.mark.parametrize("headers", [{}, {"x-functions-key": "wrong"}], ids=["no key", "wrong key"])
def test_the_definition_is_served_without_a_key_and_is_the_file_with_the_answering_host(
    devhost: DevHost, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{devhost.base_url}/api/openapi.json", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    served = response.json()
    assert served["host"] == f"127.0.0.1:{devhost.port}"
    assert served["schemes"] == ["http"]
    assert served["basePath"] == "/api"
    assert {k: v for k, v in served.items() if k not in HOST_FIELDS} == {
        k: v for k, v in DEFINITION.items() if k not in HOST_FIELDS
    }


def test_the_served_base_url_reaches_the_declared_routes(devhost: DevHost) -> None:
    """Following the served definition (scheme, host, basePath, path) lands on the app's routes:
    the job routes ask for the key, the definition route does not, other methods are refused."""
    served = httpx.get(f"{devhost.base_url}/api/openapi.json", timeout=30).json()
    base = f"{served['schemes'][0]}://{served['host']}{served['basePath']}"
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{base}/jobs/no-such-job").status_code == 401
        assert client.get(f"{base}/jobs/no-such-job", headers=devhost.headers).status_code == 404
        assert client.get(f"{base}/openapi.json").status_code == 200
        assert client.post(f"{base}/openapi.json", content=b"{}").status_code == 405
