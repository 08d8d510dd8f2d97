"""Fixtures: a real Azurite per session, the Graph emulator over loopback, a dev host per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.keys import KEY_SETTING, new_key
from devhost.stack import Azurite, DevHost, ServedEmulator, run_azurite, serve_emulator, start_devhost


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with run_azurite() as running:
        yield running


@pytest.fixture(scope="session")
def served_emulator() -> Iterator[ServedEmulator]:
    with serve_emulator() as served:
        yield served


@pytest.fixture
def graph(served_emulator: ServedEmulator) -> ServedEmulator:
    served_emulator.emulator.reset()
    return served_emulator


@pytest.fixture
def app_env(azurite: Azurite, graph: ServedEmulator) -> dict[str, str]:
    """Settings for one test: its own queue and table, so tests never see each other's work."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "PROVISIONING_QUEUE": f"prov-{suffix}",
        "WORK_QUEUE": f"provwork-{suffix}",
        "BULK_QUEUE": f"provbulk-{suffix}",
        "CALLBACK_QUEUE": f"provcallbacks-{suffix}",
        "RESULTS_TABLE": f"Results{suffix}",
        "SUBSCRIPTIONS_TABLE": f"Subscriptions{suffix}",
        "BULK_CONTAINER": f"bulk-{suffix}",
        # Once a year: a test runs the pickup itself, never on a quarter hour by chance.
        "BULK_SCHEDULE": "0 0 0 1 1 *",
        "BULK_WAIT_SECONDS": "60",
        "GRAPH_BASE_URL": graph.base_url,
        "GRAPH_CREDENTIAL": "emulator",
        "BACKOFF_BASE_SECONDS": "0.5",
        # Tests that are not about pacing run at full speed; pacing tests set their own budget.
        "GRAPH_WRITES_PER_SECOND": "1000",
        "GRAPH_READ_UNITS_PER_SECOND": "10000",
        "PACING_TABLE": f"Pacing{suffix}",
        "STATUS_RETRY_AFTER_SECONDS": "1",
        KEY_SETTING: new_key(),  # the app's host key: every dev host of the test accepts it
    }


def _hosted(env: dict[str, str], tmp_path: Path) -> Iterator[DevHost]:
    """A dev host for one test; its log's end is printed when the test ends (pytest shows it
    for a failure)."""
    host = start_devhost(env, tmp_path / "devhost.log")
    try:
        yield host
    finally:
        host.stop()
        print(host.log()[-4000:])


@pytest.fixture
def devhost(app_env: dict[str, str], tmp_path: Path) -> Iterator[DevHost]:
    yield from _hosted(app_env, tmp_path)


@pytest.fixture
def receiver_env(app_env: dict[str, str]) -> dict[str, str]:
    """`app_env`, with callbacks allowed to the local receiver that stands in for Power
    Automate (tests.integration.callback_receiver): 127.0.0.1 joins the allow-list."""
    return {**app_env, "CALLBACK_ALLOWED_HOSTS": "default,127.0.0.1"}


@pytest.fixture
def receiver_host(receiver_env: dict[str, str], tmp_path: Path) -> Iterator[DevHost]:
    """A dev host that may call the local receiver back."""
    yield from _hosted(receiver_env, tmp_path)
