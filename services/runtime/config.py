"""Load the YAML config into ``Settings``.

Order: built-in defaults < YAML file < ``IGW_<SECTION>__<KEY>`` environment
overrides. String values in the file may use ``${VAR}`` and ``${VAR:-default}``;
``$${`` writes a literal ``${``. Interpolation happens after YAML parsing, on
string scalars only, so a value can never inject YAML structure. Nothing is
ever evaluated as code or as a template beyond that substitution.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from services.runtime.settings import ModelDeployment, Price, Settings

CONFIG_ENV = "IGW_CONFIG"
DEFAULT_CONFIG_FILE = "igw.yaml"
ENV_PREFIX = "IGW_"
PROVIDER_KEY_ENV = {"openai": "OPENAI_API_KEY"}

_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration is invalid; the message names the field."""


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    config_path = _resolve_path(path, env)
    raw: dict[str, Any] = {}
    if config_path is not None:
        raw = _read_yaml(config_path)
        raw = _interpolate(raw, env, "")
    _apply_env_overrides(raw, env)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_path)) from None
    if not settings.models:
        settings = settings.model_copy(update={"models": _default_models(settings, env)})
    return settings


def _resolve_path(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        candidate = Path(path)
        if not candidate.is_file():
            raise ConfigError(f"config file {candidate} does not exist")
        return candidate
    if env.get(CONFIG_ENV):
        return _resolve_path(env[CONFIG_ENV], env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _interpolate(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, _join(where, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _substitute(value, env, where)
    return value


def _substitute(text: str, env: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, name, default = match.group(1), match.group(2), match.group(3)
        if escaped:
            return match.group(0)[1:]
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: environment variable {name} is not set "
            f"(write ${{{name}:-}} to allow it to be empty)"
        )

    return _VAR.sub(replace, text)


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """``IGW_SERVER__PORT=9000`` sets ``server.port``; ``IGW_DATA_DIR`` sets ``data_dir``;
    ``IGW_MASTER_KEY`` sets ``auth.master_key``."""
    if env.get("IGW_MASTER_KEY"):
        raw.setdefault("auth", {})
        if isinstance(raw["auth"], dict):
            raw["auth"]["master_key"] = env["IGW_MASTER_KEY"]
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path or path[0] not in Settings.model_fields or path[0] == "models":
            continue
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value


def _default_models(settings: Settings, env: Mapping[str, str]) -> list[ModelDeployment]:
    """With no models configured: real providers whose keys are set, else the simulator."""
    models: list[ModelDeployment] = []
    if env.get(PROVIDER_KEY_ENV["openai"]):
        for name, price_in, price_out in (
            ("gpt-4o-mini", "0.15", "0.60"),
            ("gpt-4o", "2.50", "10.00"),
        ):
            models.append(
                ModelDeployment(
                    alias=name,
                    provider="openai",
                    base_url="https://api.openai.com/v1",
                    api_key=SecretStr(env[PROVIDER_KEY_ENV["openai"]]),
                    model=name,
                    price=Price(
                        input_per_mtok=Decimal(price_in), output_per_mtok=Decimal(price_out)
                    ),
                    owned_by="openai",
                )
            )
    if not models and settings.simulator.enabled != "false":
        models.append(
            ModelDeployment(
                alias="sim",
                provider="openai",
                deployment="simulator",
                base_url=settings.simulator.url,
                model="sim",
                price=Price(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60")),
                owned_by="igw-simulator",
            )
        )
    return models


def _describe(exc: ValidationError, path: Path | None) -> str:
    source = str(path) if path else "configuration"
    lines = [f"{source} is invalid:"]
    for err in exc.errors():
        field = ""
        for part in err["loc"]:
            field = f"{field}[{part}]" if isinstance(part, int) else _join(field, str(part))
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {field or '(top level)'}: {message}")
    return "\n".join(lines)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
