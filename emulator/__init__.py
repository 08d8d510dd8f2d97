"""A Microsoft Graph emulator for local runs and tests (never deployed).

An in-memory tenant behind `POST /v1.0/$batch` (and single requests on `/v1.0/...`) that
enforces Graph's batch rules, throttles per item from a token bucket or from a model of Graph's
identity limits per application and tenant (`emulator.limits`), injects faults on request, and
records every call.
"""
