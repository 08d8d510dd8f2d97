"""How fast provisioning work gets through a rate-limited Graph: the app against two baselines.

    .venv/bin/python -m bench.pace [--scenario N ...] [--quick] [--out DIR]   (or: bash scripts/bench)

Starts Azurite, the Graph emulator (its own process) and dev hosts on loopback, and runs every
contender against the same emulated limits in one run, so the numbers compare contenders, not
machines. Writes `pace.md` (also printed) and `pace.png` to `--out` (default bench/results).

Contenders (scenarios 1 and 2):
- product, 1 host / 3 hosts: dev hosts fed by HTTP jobs, polled like Power Automate does; the
  three hosts share queue, tables and storage account, jobs go to them round-robin;
- naive: one direct request per operation, 4 workers, on 429 wait Retry-After and resend;
- SDK-style: `$batch` chunks of 20, 4 workers, resend only the throttled items after the
  longest item Retry-After (Microsoft's batching guidance).

Scenarios (`--quick` shrinks them for a smoke run of the harness):
1. 5,000 user creates under 100 writes/s, burst 20 (bound 50 s); product jobs 10 x 500.
2. 2,000 creates under 20 writes/s (Graph's real shape; bound 100 s).
3. A 20-operation job submitted 10 s into a 5,000-row bulk CSV drain: seconds to its 200.
4. 1,000 single-operation queue messages, no limit: `$batch` calls (target <= 52).
5. Cold start: median import time of function_app against azure.functions (target +150 ms).
6. Ten 1,000-operation jobs on one host: its peak RSS (target <= 200 MB).

A run that does not finish within 4 x its bound + 60 s is reported as timed out. The full
set takes about 20 minutes. Exit code: 0 all targets met, 1 not, 130 interrupted.
"""
