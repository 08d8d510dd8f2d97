"""A development host for machines without Azure Functions Core Tools (never deployed).

It reads the function app's own trigger metadata (`app.get_functions()`) and serves it:
HTTP on 127.0.0.1:7071 under /api, queue polling per host.json, timers on their schedules.
"""
