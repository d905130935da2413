"""Garbage-collector settings for long-running services.

Request handling allocates many short-lived objects (messages, models,
dicts); with CPython's default generation-0 threshold of 700 allocations the
cyclic collector runs thousands of times a second under load. Objects that
exist after start-up are frozen out of collection, and the thresholds are
raised so collections are rare; reference counting still frees almost all
garbage at once.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, 20, 20)
