"""A Microsoft Graph emulator for local runs and tests (never deployed).

An in-memory tenant behind `POST /v1.0/$batch` that enforces Graph's batch rules, throttles
per item from a token bucket, injects faults on request, and records every call.
"""
