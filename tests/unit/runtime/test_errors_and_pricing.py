from __future__ import annotations

from decimal import Decimal

import pytest

from services.runtime import errors as e
from services.runtime.pricing import cost_usd
from services.runtime.settings import Price


@pytest.mark.parametrize(
    ("status", "cls", "client_status", "retryable"),
    [
        (429, e.UpstreamRateLimited, 429, True),
        (401, e.UpstreamAuthFailed, 502, False),
        (403, e.UpstreamAuthFailed, 502, False),
        (400, e.UpstreamBadRequest, 400, False),
        (404, e.UpstreamError, 502, True),
        (500, e.UpstreamError, 502, True),
        (502, e.UpstreamError, 502, True),
        (503, e.UpstreamUnavailable, 503, True),
        (529, e.UpstreamUnavailable, 503, True),
        (504, e.UpstreamTimeout, 504, True),
    ],
)
def test_upstream_status_mapping(
    status: int, cls: type[e.GatewayError], client_status: int, retryable: bool
) -> None:
    err = e.upstream_error_for_status(status, "boom", retry_after=2.0)
    assert type(err) is cls
    assert err.status == client_status
    assert err.retryable is retryable


def test_error_info_round_trip_to_openai_body() -> None:
    err = e.ModelNotFound("no model x", param="model")
    info = err.to_info()
    assert (info.status, info.type, info.code, info.param) == (
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    body = err.to_response().model_dump()
    assert body == {
        "error": {
            "message": "no model x",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_cost_is_exact_decimal() -> None:
    price = Price(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))
    assert cost_usd(price, 1_000_000, 1_000_000) == Decimal("0.75")
    assert cost_usd(price, 3, 7) == Decimal("0.00000465")


def test_cached_tokens_use_their_own_rate() -> None:
    price = Price(
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cached_input_per_mtok=Decimal("0.1"),
    )
    assert cost_usd(price, 1000, 0, cached_tokens=400) == Decimal("0.00064")


def test_gc_tuning_raises_the_collection_threshold() -> None:
    import gc

    from services.runtime.gc_tuning import GEN0_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
