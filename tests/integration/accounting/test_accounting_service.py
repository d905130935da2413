"""The accounting service end to end: real nats-server, real chDB, a real subprocess."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from schemas.subjects import (
    CONSUMER_ACCOUNTING,
    HEADER_MSG_ID,
    STREAM_USAGE,
    USAGE_WILDCARD,
    usage_subject,
)
from services.accounting.sql_client import run_sql
from services.runtime.settings import Settings
from tests.integration.accounting.harness import (
    AccountingProcess,
    eventually,
    publish,
    sql,
    totals,
    wait_ready,
)
from tests.unit.accounting.factories import total_cost, usage_event

pytestmark = pytest.mark.integration


async def consumer_drained(nc: Client) -> bool | None:
    info = await nc.jetstream().consumer_info(STREAM_USAGE, CONSUMER_ACCOUNTING)
    return True if info.num_pending == 0 and info.num_ack_pending == 0 else None


async def test_no_responder_means_not_running(settings: Settings, nc: Client) -> None:
    result = await run_sql(settings, "SELECT 1")
    assert result.error is not None
    assert "the accounting service is not running" in result.error


async def test_usage_lands_once_and_sql_is_answered(
    settings: Settings, nc: Client, accounting: AccountingProcess
) -> None:
    js = nc.jetstream()
    # A consumer left behind with other settings is brought to the configured ones.
    await js.add_consumer(
        STREAM_USAGE,
        ConsumerConfig(
            durable_name=CONSUMER_ACCOUNTING,
            name=CONSUMER_ACCOUNTING,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=5,
            filter_subject=USAGE_WILDCARD,
        ),
    )
    accounting.start()
    await wait_ready(settings, accounting)
    info = await js.consumer_info(STREAM_USAGE, CONSUMER_ACCOUNTING)
    assert info.config.ack_wait == accounting.ack_wait_s
    assert info.config.max_ack_pending == 4 * settings.clickhouse.batch_size

    events = [usage_event(i) for i in range(1, 1001)]
    await nc.publish(usage_subject("openai"), b"{broken", headers={HEADER_MSG_ID: "bad:1"})
    await js.publish(usage_subject("openai"), b"not json", headers={HEADER_MSG_ID: "bad:2"})
    acks = await publish(js, events)
    assert not any(ack.duplicate for ack in acks)
    # The same message ids again within the window: the stream drops them.
    again = await publish(js, events[:50])
    assert all(ack.duplicate for ack in again)

    expected = (len(events), total_cost(events), len(events))

    async def landed() -> bool | None:
        accounting.check_alive()
        return True if await totals(settings) == expected else None

    await eventually(landed, f"{len(events)} rows in ClickHouse")
    await eventually(lambda: consumer_drained(nc), "the consumer to ack everything")

    by_tenant = await sql(
        settings, "SELECT tenant, count() FROM requests GROUP BY tenant ORDER BY tenant"
    )
    assert by_tenant.rows == [["tenant-a", 500], ["tenant-b", 500]]
    rejected = await sql(settings, "DROP TABLE requests")
    assert rejected.error is not None
    assert "only read-only queries" in rejected.error
    unknown = await sql(settings, "SELECT * FROM no_such_table")
    assert unknown.error is not None
    assert "UNKNOWN_TABLE" in unknown.error
    truncated = await run_sql(settings, "SELECT request_id FROM requests", max_rows=7)
    assert len(truncated.rows) == 7
    assert truncated.truncated

    assert accounting.terminate() == 0
    assert "flushed" in accounting.output()


async def test_sigkill_mid_batch_then_restart_counts_every_event_once(
    settings: Settings, nc: Client, accounting: AccountingProcess
) -> None:
    js = nc.jetstream()
    accounting.start()
    await wait_ready(settings, accounting)

    events = [usage_event(i) for i in range(1, 20_001)]
    await publish(js, events)

    async def partly_stored() -> int | None:
        accounting.check_alive()
        count, _, _ = await totals(settings)
        return count if 0 < count < len(events) else None

    seen_before_kill = await eventually(partly_stored, "some but not all rows")
    accounting.kill()

    accounting.start()
    await wait_ready(settings, accounting)
    expected = (len(events), total_cost(events), len(events))

    async def all_stored() -> bool | None:
        accounting.check_alive()
        return True if await totals(settings) == expected else None

    await eventually(all_stored, "every event exactly once after the restart")
    raw = await sql(settings, "SELECT count() FROM requests SETTINGS final = 0")
    print(f"killed after {seen_before_kill} visible rows; physical rows now {raw.rows[0][0]}")

    # Re-published long after the stream's duplicate window could help: new
    # message ids, identical content. The writer finds the attempts already
    # stored and inserts nothing, so the rollups count them once too.
    before = await sql(settings, "SELECT max(inserted_at) FROM requests")
    replays = events[:5]
    acks = await publish(js, replays, [f"{e.request_id}:1:replay" for e in replays])
    assert not any(ack.duplicate for ack in acks)
    await eventually(lambda: consumer_drained(nc), "the replays to be handled and acked")
    assert await totals(settings) == expected
    ids = ", ".join(f"'{e.request_id}'" for e in replays)
    replaced = await sql(
        settings,
        f"SELECT count() FROM requests WHERE request_id IN ({ids}) "
        f"AND inserted_at > parseDateTime64BestEffort('{before.rows[0][0]}', 3)",
    )
    assert replaced.error is None, replaced.error
    assert replaced.rows == [[0]]
    rolled = await sql(settings, "SELECT sum(requests), sum(cost_usd) FROM usage_day")
    assert rolled.rows == [[len(events), str(total_cost(events))]]
