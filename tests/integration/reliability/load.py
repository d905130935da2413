"""Client loops for the restart and failover tests: each thread sends chat completions
through the official ``openai`` SDK, alternating between ingress replicas, and
records what became of every request.

A request the gateway never accepted (the connection was refused or closed before
an answer began, or a draining replica's 503 ``shutting_down``) is retried on the
next replica and counted as ``refused``. Every other request is ``accepted`` and
recorded as an ``Outcome``: a stream must end with a ``finish_reason``, its usage
chunk and ``[DONE]``; anything else is reported as it was (an error event, an
HTTP error, a cut connection), never hidden.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

PROMPT: list[Any] = [{"role": "user", "content": "tell me a long story"}]


@dataclass
class Outcome:
    replica: int
    started: float
    ended: float = 0.0
    request_id: str | None = None
    status: int = 0
    complete: bool = False
    """A stream: finish_reason, usage and [DONE]; not streaming: a whole answer."""
    error: str | None = None
    """What the client got instead of a complete answer."""


@dataclass
class Load:
    urls: list[str]
    model: str
    stream: bool = True
    api_key: str = "unused"
    timeout_s: float = 40.0
    outcomes: list[Outcome] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    """Requests never accepted, by ``"<replica>:<reason>"``."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, loops: int) -> None:
        for n in range(loops):
            thread = threading.Thread(target=self._loop, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a client loop hung"

    def finished(self) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.ended)

    def open_on(self, replica: int) -> int:
        """Accepted requests to ``replica`` still being answered."""
        with self._lock:
            return sum(1 for o in self.outcomes if o.replica == replica and not o.ended)

    def accepted(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def _loop(self, n: int) -> None:
        clients = [
            openai.OpenAI(
                base_url=f"{url}/v1",
                api_key=self.api_key,
                max_retries=0,
                timeout=self.timeout_s,
                _strict_response_validation=True,
            )
            for url in self.urls
        ]
        turn = n
        while not self._stop.is_set():
            replica = turn % len(clients)
            turn += 1
            outcome = Outcome(replica=replica, started=time.monotonic())
            if self._send(clients[replica], outcome, replica):
                outcome.ended = time.monotonic()

    def _send(self, client: openai.OpenAI, outcome: Outcome, replica: int) -> bool:
        """One request; False when it was not accepted (the caller moves on to the next
        replica)."""
        create = client.chat.completions.with_streaming_response.create
        usage: Any = {"include_usage": True} if self.stream else openai.omit
        try:
            with create(
                model=self.model, messages=PROMPT, stream=self.stream, stream_options=usage
            ) as reply:
                outcome.status = reply.status_code
                outcome.request_id = reply.headers.get("x-request-id")
                with self._lock:
                    self.outcomes.append(outcome)
                if self.stream:
                    _read_stream(reply.iter_lines(), outcome)
                else:
                    answer = ChatCompletion.model_validate(json.loads(reply.read()))
                    outcome.complete = bool(answer.choices and answer.choices[0].finish_reason)
        except openai.APIStatusError as exc:
            code = (exc.body or {}).get("code") if isinstance(exc.body, dict) else None
            if exc.status_code == 503 and code == "shutting_down" and not outcome.status:
                self.refused[f"{replica}:draining"] += 1
                return False
            outcome.status = exc.status_code
            outcome.request_id = exc.response.headers.get("x-request-id")
            outcome.error = f"{exc.status_code} {code}: {exc.message}"
            with self._lock:
                self.outcomes.append(outcome)
        except openai.APITimeoutError:  # the gateway took the request, then went silent
            outcome.error = "timed out"
            if not outcome.status:
                with self._lock:
                    self.outcomes.append(outcome)
        except (openai.APIConnectionError, httpx2.HTTPError) as exc:
            if not outcome.status:  # nothing came back: never accepted
                self.refused[f"{replica}:{type(exc.__cause__ or exc).__name__}"] += 1
                return False
            outcome.error = f"connection lost mid-answer: {exc.__cause__ or exc!r}"
        except Exception as exc:  # anything else is a failure to report, not a dead loop
            outcome.error = f"unexpected: {exc!r}"
            if not outcome.status:
                with self._lock:
                    self.outcomes.append(outcome)
        return True


def _read_stream(lines: Any, outcome: Outcome) -> None:
    finish_reason, usage, done = None, None, False
    for line in lines:
        if not line or line.startswith(":"):
            continue
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            outcome.error = f"error event: {event['error']}"
            return
        chunk = ChatCompletionChunk.model_validate(event)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish_reason = chunk.choices[0].finish_reason
        if chunk.usage is not None:
            usage = chunk.usage
    outcome.complete = done and finish_reason is not None and usage is not None
    if not outcome.complete:
        outcome.error = f"truncated: done={done} finish_reason={finish_reason} usage={usage}"
