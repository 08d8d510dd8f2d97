"""The dev host's queue trigger keeps its contract with the message it holds: a function that
runs longer than the lease keeps it, and the message is deleted once, never run again because
a lease renewal was in flight when the function finished. Real Azurite."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient

from devhost import host
from devhost.config import QueueOptions
from devhost.host import FunctionEntry, QueuePoller
from devhost.stack import Azurite


class _SlowRenewals(QueueClient):
    """Lease renewals whose answers travel slowly: the renewal has taken effect (the message
    has a new pop receipt) while the function, finishing, has not heard of it yet."""

    async def update_message(self, *args: Any, **kwargs: Any) -> Any:
        updated = await super().update_message(*args, **kwargs)
        await asyncio.sleep(0.2)
        return updated


def test_a_message_whose_function_outlives_its_lease_runs_once_even_when_a_renewal_is_in_flight(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "LEASE_SECONDS", 1)  # renewed every third of a second
    name = f"lease-{uuid.uuid4().hex[:10]}"
    runs: Counter[str] = Counter()

    async def handler(msg: Any) -> None:
        runs[msg.get_body().decode()] += 1
        await asyncio.sleep(1.5 + 0.05 * (runs.total() % 7))  # ends at different points of a renewal

    entry = FunctionEntry("slow", handler, {"type": "queueTrigger", "name": "msg", "queueName": name})
    options = QueueOptions(max_polling_interval=0.2, message_encoding="none", visibility_timeout=0)

    def make_client(queue_name: str) -> QueueClient:
        return _SlowRenewals.from_connection_string(azurite.connection_string, queue_name)

    async def run() -> int:
        async with make_client(name) as producer:
            await producer.create_queue()
            for n in range(12):
                await producer.send_message(f"m{n}")
            poller = QueuePoller(entry, options, make_client)
            polling = asyncio.create_task(poller.run())
            try:
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    if (
                        len(runs) == 12
                        and (await producer.get_queue_properties()).approximate_message_count == 0
                    ):
                        break
                await asyncio.sleep(3)  # a message whose delete failed would be back by now
            finally:
                polling.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await polling
            return (await producer.get_queue_properties()).approximate_message_count or 0

    left = asyncio.run(run())
    assert left == 0
    assert runs == {f"m{n}": 1 for n in range(12)}
