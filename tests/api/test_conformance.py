"""Schemathesis against the running service and its own OpenAPI document: every check it has.

The CLI runs as it would for a user (``schemathesis run URL --checks all``): examples,
coverage, fuzzing (data that fits the schema, and data that does not) and the stateful phase,
which follows the document's links from a created generation to get, events, files, archive,
cancel and a new stream token. Every answer must be one the document allows (status, content
type, headers, body schema; each SSE event against the ``Event`` schema), schema-valid data
must be accepted and invalid data refused, and nothing may be a 5xx. 0 failures.

One check is narrowed, in ``schemathesis_hooks.py``: a 400 for a rule JSON Schema cannot state
(a cursor we did not issue, a keyword as a name, a type naming no entity of the spec) is not
a "valid request rejected"; the hook recognises each rule by the service's own words.

The finished generation the stream and a file are read from is a real offline run, so the
events the stream sends are real ones; the generations the fuzzer creates stay queued (no
worker), so a stream on one of them would never end, and none is linked to.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from service.settings import PROJECT_ROOT
from tests.conftest import AppFactory, KeyFactory
from tests.helpers import API, SMALL_SPEC, create_via_api, wait_for_status

pytestmark = pytest.mark.slow

EXAMPLES = 40  # per operation and phase: about 1,000 cases in all
SEED = int(os.environ.get("GENSTREAM_FUZZ_SEED", "20261130"))  # reproducible; vary to explore
RUN_TIMEOUT_S = 480


@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
async def test_schemathesis_finds_no_failure_against_the_running_service(
    app_factory: AppFactory, make_key: KeyFactory, tmp_path: Path
) -> None:
    # An admin's key, so that the feed and /metrics are exercised, not only refused (403).
    key = await make_key("alice", is_admin=True)
    async with app_factory(offline_delay_s=0.0) as running, running.client(key) as client:
        finished = (await create_via_api(client, SMALL_SPEC))["id"]
        await wait_for_status(client, finished, "succeeded")
        path = (await client.get(f"{API}/{finished}/files")).json()["files"][0]["path"]
        document = (await client.get("/schema/openapi.json")).json()
    operations = sum(len(item) for item in document["paths"].values())
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"""
[[operations]]
include-operation-id = "streamEvents"
parameters = {{ generation_id = "{finished}" }}

[[operations]]
include-operation-id = "getFile"
parameters = {{ generation_id = "{finished}", path = "{path}" }}
"""
    )
    no_limits = {"owner_runs_per_minute": 0, "owner_max_active_runs": 0, "owner_max_streams": 0}
    # GET /api/stream never ends by itself: here it ends within a second, as it would after
    # GENSTREAM_ALL_RUNS_STREAM_MAX_S, so that each of its cases gets a whole answer.
    async with app_factory(worker_concurrency=0, all_runs_stream_max_s=1.0, **no_limits) as running:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
            f"{running.base_url}/schema/openapi.json",
            *("--header", f"Authorization: Bearer {key}"),
            *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
            *("--max-examples", str(EXAMPLES), "--seed", str(SEED)),
            *("--request-timeout", "15", "--generation-database", "none", "--no-color"),
            cwd=PROJECT_ROOT,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
                "PYTHONPATH": str(PROJECT_ROOT),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    report = output.decode(errors="replace")
    summary = report[report.rfind("SUMMARY") :]
    print(summary)
    assert process.returncode == 0, report[-20_000:]
    assert f"Tested: {operations}" in summary  # every operation, none skipped
    assert "✅ Stateful" in summary
