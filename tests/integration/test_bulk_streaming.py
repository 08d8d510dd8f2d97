"""A bulk file is streamed from the container and read a row at a time, never held whole."""

from __future__ import annotations

import hashlib
import tempfile
import tracemalloc

from batching.bulk.pickup import count_rows, download_to, rewinding
from batching.settings import Settings
from batching.storage import container_client
from tests.integration.helpers import bulk_container

ROWS = 100_000
MiB = 1 << 20


async def test_a_100000_row_file_and_a_larger_one_are_downloaded_and_counted_in_chunks(
    app_env: dict[str, str],
) -> None:
    lines = ["userPrincipalName,jobTitle,department"]
    lines += [f"user{n}@contoso.com,Title {n},Department {n % 40}" for n in range(1, ROWS + 1)]
    data = ("\n".join(lines) + "\n").encode()
    larger = data * 4  # about 19 MiB: a whole-file read could not stay under the bound below
    with bulk_container(app_env) as container:
        container.upload_blob("rows.csv", data)
        container.upload_blob("larger.csv", larger)
    settings = Settings.model_validate(app_env)
    peaks: dict[str, int] = {}

    async with container_client(settings, app_env["BULK_CONTAINER"]) as container_aio:
        for name, content in (("rows.csv", data), ("larger.csv", larger)):
            with tempfile.TemporaryFile() as local:
                tracemalloc.start()
                sha256 = await download_to(container_aio.get_blob_client(name), local)
                peaks[name] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                assert sha256 == hashlib.sha256(content).hexdigest()
                assert local.tell() == len(content)
                if name == "rows.csv":
                    tracemalloc.start()
                    assert count_rows(rewinding(local)) == ROWS
                    peaks["counting"] = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()

    # 1 MiB ranges: the same few MiB in flight whatever the size of the file
    assert peaks["larger.csv"] < 8 * MiB < len(larger) / 2
    assert peaks["larger.csv"] < peaks["rows.csv"] * 1.5
    # rows are yielded one at a time; only the duplicate-user index grows with the rows
    assert peaks["counting"] < 25 * MiB
    print(
        f"\ndownload peaks: {len(data) / MiB:.1f} MiB file {peaks['rows.csv'] / MiB:.1f} MiB, "
        f"{len(larger) / MiB:.1f} MiB file {peaks['larger.csv'] / MiB:.1f} MiB; "
        f"counting {ROWS:,} rows {peaks['counting'] / MiB:.1f} MiB"
    )
