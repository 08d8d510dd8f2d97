from __future__ import annotations

import pytest
from pydantic import JsonValue

from batching.models import Operation, WorkItem
from batching.workqueue import WorkTooLarge, pack_work


def _item(op_id: str, *deps: str, size: int = 10) -> WorkItem:
    body: JsonValue = {"note": "x" * size}
    return WorkItem(
        operation=Operation(id=op_id, method="PATCH", url=f"/users/{op_id}", body=body, depends_on=deps)
    )


def test_small_job_is_one_message() -> None:
    messages = pack_work("j", "c", [_item(str(i)) for i in range(45)])
    assert len(messages) == 1
    assert messages[0].correlation_id == "c"
    assert len(messages[0].items) == 45


def test_large_job_splits_under_the_limit_keeping_dependency_groups_whole() -> None:
    items = [_item("a", size=300), _item("b", "a", size=300), _item("c", size=300), _item("d", "c", size=300)]
    messages = pack_work("j", None, items, limit=1500)
    assert [[i.operation.id for i in m.items] for m in messages] == [["a", "b"], ["c", "d"]]
    assert all(len(m.model_dump_json(by_alias=True)) <= 1500 for m in messages)


def test_dependency_group_larger_than_a_message_is_refused_without_naming_its_operations() -> None:
    with pytest.raises(WorkTooLarge, match=r"^2 operations depend on each other") as refused:
        pack_work("j", None, [_item("a", size=900), _item("b", "a", size=900)], limit=1500)
    assert "a" not in str(refused.value).split()
