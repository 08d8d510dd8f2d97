"""Bulk user updates from CSV files: read rows, compare them with what Graph holds, write only
what differs, or preview it.

`reader`: CSV rows to operations. `pickup`: files in the container to jobs (and previews).
"""
