"""Microsoft Graph provisioning processor: intake, planning, $batch sending and result records.

Data walks one way: intake -> validate -> plan -> send -> record / re-enqueue.
`function_app.py` only wires Azure Functions triggers to `batching.service`.
"""
