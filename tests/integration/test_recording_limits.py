"""What can fail after Graph acted is checked before sending, or cannot fail: queue message
size at the door, Table storage's limits when recording."""

from __future__ import annotations

import json

from devhost.stack import DevHost, ServedEmulator
from tests.integration.helpers import all_partitions, poison_messages, put_message, rows, wait_until


def test_an_answer_too_large_for_table_storage_is_recorded_cut_and_sent_once(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    wide = "\U0001f600" * 20_000  # 40,000 UTF-16 units in one property of Graph's answer
    document = {
        "jobId": "wide",
        "operations": [
            {
                "id": f"user{n}",
                "method": "POST",
                "url": "/users",
                "body": {"userPrincipalName": f"wide{n}@contoso.com", "displayName": "Wide", "jobTitle": "x"},
            }
            for n in range(30)
        ],
    }
    graph.emulator.tenant.seed_users(0)
    put_message(app_env, json.dumps(document), as_base64=False)
    # The emulator answers with what it stored; make the stored users carry the wide text.
    wait_until(lambda: len(rows(app_env, "wide")) == 30, timeout=30)
    wait_until(lambda: all(r["Status"] != "Pending" for r in rows(app_env, "wide").values()), timeout=30)
    assert {r["Status"] for r in rows(app_env, "wide").values()} == {"Succeeded"}

    patch = {
        "jobId": "wide-patch",
        "operations": [
            {
                "id": f"p{n}",
                "method": "PATCH",
                "url": f"/users/wide{n}@contoso.com",
                "body": {"jobTitle": wide[:100]},
            }
            for n in range(30)
        ]
        + [{"id": "read", "method": "GET", "url": "/users/wide0@contoso.com"}],
    }
    for user in graph.emulator.tenant.users.values():
        user["aboutMe"] = wide
    put_message(app_env, json.dumps(patch), as_base64=False)

    wait_until(lambda: len(rows(app_env, "wide-patch")) == 31, timeout=30)
    wait_until(
        lambda: all(r["Status"] != "Pending" for r in rows(app_env, "wide-patch").values()), timeout=30
    )
    read = rows(app_env, "wide-patch")["read"]
    assert read["Status"] == "Succeeded", (read.get("ErrorCode"), read.get("ErrorMessage"))
    assert read["ResponseBodyTruncated"] is True
    assert len(read["ResponseBody"]) <= 30_000
    assert read["ResponseBody"].isascii()
    sent = [item["url"] for call in graph.emulator.batch_calls() for item in call["items"]]
    assert sent.count("/users/wide0@contoso.com") == 2  # the PATCH and the GET, once each


def test_a_queued_job_whose_retry_could_not_fit_a_queue_message_is_rejected_before_sending(
    graph: ServedEmulator, app_env: dict[str, str], devhost: DevHost
) -> None:
    big = "x" * 20_000
    operations = [
        {"id": "a", "method": "PATCH", "url": "/users/user1@contoso.com", "body": {"aboutMe": big}},
        {
            "id": "b",
            "method": "PATCH",
            "url": "/users/user1@contoso.com",
            "body": {"aboutMe": big},
            "dependsOn": ["a"],
        },
        {
            "id": "c",
            "method": "PATCH",
            "url": "/users/user1@contoso.com",
            "body": {"aboutMe": big},
            "dependsOn": ["b"],
        },
    ]
    put_message(app_env, json.dumps({"jobId": "chain", "operations": operations}), as_base64=False)

    wait_until(lambda: len(poison_messages(app_env)) == 1, timeout=30)
    found = all_partitions(app_env)["chain"]
    assert {row["RowKey"]: row["Status"] for row in found if row["RowKey"]} == {
        "a": "Rejected",
        "b": "Rejected",
        "c": "Rejected",
    }
    assert graph.emulator.batch_calls() == []
