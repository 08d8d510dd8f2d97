"""The fault suite: does every operation end with exactly one outcome, once, when Graph, storage
and the host fail underneath it?

    .venv/bin/python -m bench.faults [--scenario KEY ...] [--quick] [--seed N] [--out DIR]
    (or: bash scripts/faults)

Each scenario starts a fresh Azurite on a data folder, resets the Graph emulator (its own
process), starts one dev host and sends jobs that create users and groups and chain member
references to them (`bench.faults.workload`), half through the HTTP door, half on the queue.
Then it waits until every operation has a final row, and counts, per group variant (with or
without uniqueName): operations, final rows, lost operations, objects made twice (from what the
emulator's tenant holds), the most attempts of any row, and subrequests Graph received.

1a-1e. Graph faults from the emulator's seeded `faults` option (`emulator/faults.py`): item
       503/504s, whole-batch 503s, answers late or never after acting, dropped connections,
       answers missing item ids, and all of them at once.
2.     Storage: Azurite stopped and restarted on the same folder and ports, mid-run.
3.     Process: the dev host killed with SIGKILL at random moments and restarted.

When a scenario's work settles with messages on the poison queues (deliveries that failed, or
were killed, MAX_DEQUEUE_COUNT times), the run does what an operator does: `python -m batching
poison replay` with the scenario's settings while a healthy host runs (`bench.faults.replay`);
once the work settles again the same figures and checks are taken a second time.

Writes `faults.md` to `--out` (default bench/results) and prints it; host and Azurite logs and
a `findings-<scenario>.json` per scenario (lost operations, duplicate keys, failures) go to a
temporary folder named at the start. Exit code: 0 when every check passed, 1 otherwise, 130 on
Ctrl-C.
"""
