from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from services.runtime import natsserver, topology
from services.runtime.settings import ClickHouseSettings, NatsSettings, Settings
from tests.integration.accounting.harness import AccountingProcess


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    spec = natsserver.NatsServerSpec(
        host="127.0.0.1", port=natsserver.free_port(), store_dir=tmp_path / "nats"
    )
    proc = natsserver.start(spec, log_file=tmp_path / "nats.log")
    try:
        yield spec.url
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def settings(tmp_path: Path, nats_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        nats=NatsSettings(url=nats_url, connect_timeout_s=2),
        clickhouse=ClickHouseSettings(
            dsn=f"chdb://{tmp_path / 'clickhouse'}", batch_size=200, flush_interval_ms=100
        ),
    )


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[Client]:
    client = await nats.connect(settings.nats.url)
    await topology.declare(client.jetstream(), settings)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def accounting(settings: Settings, tmp_path: Path) -> Iterator[AccountingProcess]:
    service = AccountingProcess(settings, tmp_path)
    try:
        yield service
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
