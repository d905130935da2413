"""``POST /infer``: a one-prompt endpoint over the same path as chat completions.

``{"model": "auto", "prompt": "...", "max_tokens": 50}`` →
``{"output": "...", "provider": "gemini", "latency_ms": 145.2, "cost": 0.000015}``
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("auto", min_length=1, max_length=256)
    prompt: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


class InferResponse(BaseModel):
    output: str
    provider: str
    deployment: str
    model: str
    latency_ms: float
    cost: float
    prompt_tokens: int
    completion_tokens: int
