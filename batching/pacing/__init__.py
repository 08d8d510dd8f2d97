"""Working at Graph's pace across every instance of the app.

`schedule`: the pure arithmetic of one shared budget (a token bucket kept as a theoretical
arrival time, Graph's holds, and the adaptive share). `store`: where the fleet keeps that
state (a Table entity updated with ETags, or memory). `pacer`: what an instance calls before
each `$batch`, and tells after it.
"""

from batching.pacing.pacer import Pacer
from batching.pacing.schedule import Feedback, Lane, LaneLimit, LaneState
from batching.pacing.store import MemoryPaceStore, PaceConflict, PaceStoreUnavailable, TablePaceStore

__all__ = [
    "Feedback",
    "Lane",
    "LaneLimit",
    "LaneState",
    "MemoryPaceStore",
    "PaceConflict",
    "PaceStoreUnavailable",
    "Pacer",
    "TablePaceStore",
]
