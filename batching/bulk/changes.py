"""A row compared with what Graph holds: which of its operations change something.

Values compare as Graph stores them:

- text exactly as written (Graph keeps the case it was given), an empty cell never compared;
  `#clear` is a change only when Graph holds a value (null and "" are both "no value");
- `accountEnabled` as a boolean, whichever of true/yes/1 the file used;
- `manager` by the manager's id or userPrincipalName, either ignoring case; `#clear` is a
  change only when the user has a manager;
- a user the read did not find (not replicated yet, or no such user) is not compared: its
  row's operations are sent as they are, and Graph's answer is its result.

The `PATCH` that is sent carries only the properties that differ, with the file's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import JsonValue

from batching.bulk.current import CurrentUser
from batching.bulk.reader import BOOLEAN_PROPERTIES, RowOperations
from batching.models import Operation

NO_CHANGE: Final = "no change"
MANAGER: Final = "manager"


@dataclass(frozen=True, slots=True)
class PropertyChange:
    name: str
    current: JsonValue
    new: JsonValue


@dataclass(frozen=True, slots=True)
class RowPlan:
    """What one row does once compared: operations to send, operations already true."""

    row: RowOperations
    found: bool
    changes: tuple[PropertyChange, ...]
    send: tuple[Operation, ...]
    unchanged: tuple[Operation, ...]

    @property
    def changed(self) -> bool:
        return bool(self.send)


def plan_row(row: RowOperations, current: CurrentUser | None) -> RowPlan:
    """The row's operations split into what to send and what Graph already holds."""
    if current is None:
        return RowPlan(row, False, (), row.operations, ())
    differing = {
        name: value for name, value in row.properties.items() if _differs(name, value, current.values)
    }
    changes = [PropertyChange(name, _held(name, current.values), value) for name, value in differing.items()]
    send: list[Operation] = []
    unchanged: list[Operation] = []
    for operation in row.operations:
        if operation.method == "PATCH":
            if differing:
                send.append(operation.model_copy(update={"body": differing}))
            else:
                unchanged.append(operation)
        elif _manager_differs(row, current):
            send.append(operation)
            changes.append(
                PropertyChange(MANAGER, current.manager_upn or current.manager_id, _new_manager(row))
            )
        else:
            unchanged.append(operation)
    return RowPlan(row, True, tuple(changes), tuple(send), tuple(unchanged))


def _held(name: str, values: Mapping[str, JsonValue]) -> JsonValue:
    return values.get(name.lower())


def _differs(name: str, wanted: JsonValue, values: Mapping[str, JsonValue]) -> bool:
    held = _held(name, values)
    if wanted is None:
        return held not in (None, "")
    if name in BOOLEAN_PROPERTIES:
        return held is not wanted
    return held != wanted


def _manager_differs(row: RowOperations, current: CurrentUser) -> bool:
    if row.manager is None:
        return False
    if row.clears_manager:
        return current.manager_id is not None
    wanted = row.manager.lower()
    held = {key.lower() for key in (current.manager_id, current.manager_upn) if key}
    return wanted not in held


def _new_manager(row: RowOperations) -> JsonValue:
    return None if row.clears_manager else row.manager
