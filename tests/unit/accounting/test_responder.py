from __future__ import annotations

from schemas.bus import SqlQuery
from services.accounting import responder
from services.runtime.settings import ClickHouseSettings
from tests.unit.accounting.fakes import FakeStore

LIMITS = ClickHouseSettings(max_result_rows=100, query_timeout_s=10)


async def test_answers_and_caps_limits() -> None:
    store = FakeStore()
    request = SqlQuery(sql="SELECT 1", max_rows=1_000_000, timeout_s=3600)
    result = await responder.answer(store, request.model_dump_json().encode(), LIMITS)
    assert result.rows == [[1]]
    assert store.queries == [("SELECT 1", 100, 10)]


async def test_a_body_that_is_not_a_query_gets_an_error_reply() -> None:
    result = await responder.answer(FakeStore(), b"{not json", LIMITS)
    assert result.error is not None
    assert "not a SqlQuery" in result.error


async def test_an_unexpected_failure_gets_an_error_reply() -> None:
    store = FakeStore()
    store.query_error = RuntimeError("boom")
    result = await responder.answer(
        store, SqlQuery(sql="SELECT 1").model_dump_json().encode(), LIMITS
    )
    assert result.error == "internal error: RuntimeError: boom"
