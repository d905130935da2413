from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from services.runtime.config import ConfigError, load_settings

MODEL = """
models:
  - alias: fast
    provider: openai
    base_url: https://api.example.com/v1/
    api_key: ${EXAMPLE_KEY}
    model: small-1
    price: {input_per_mtok: 0.5, output_per_mtok: 1.5}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "igw.yaml"
    path.write_text(text)
    return path


def test_defaults_route_sim_to_the_simulator_without_keys() -> None:
    settings = load_settings(env={})
    assert [m.alias for m in settings.models] == ["sim"]
    assert settings.simulator_enabled
    assert settings.models[0].base_url == settings.simulator.url
    assert settings.clickhouse_embedded


def test_defaults_use_openai_when_its_key_is_set() -> None:
    settings = load_settings(env={"OPENAI_API_KEY": "sk-test"})
    assert {m.alias for m in settings.models} == {"gpt-4o-mini", "gpt-4o"}
    assert not settings.simulator_enabled
    assert settings.models[0].api_key is not None
    assert "sk-test" not in repr(settings)


def test_interpolation_and_prices(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MODEL), env={"EXAMPLE_KEY": "k-123"})
    model = settings.models[0]
    assert model.api_key is not None
    assert model.api_key.get_secret_value() == "k-123"
    assert model.base_url == "https://api.example.com/v1"
    assert model.deployment == "fast"
    assert model.price.output_per_mtok == Decimal("1.5")


def test_missing_variable_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, MODEL), env={})
    assert "models[0].api_key" in str(info.value)
    assert "EXAMPLE_KEY" in str(info.value)


def test_default_value_and_escape(tmp_path: Path) -> None:
    text = MODEL.replace("${EXAMPLE_KEY}", "${EXAMPLE_KEY:-fallback}") + "data_dir: $${HOME}/x\n"
    settings = load_settings(write(tmp_path, text), env={})
    assert settings.models[0].api_key is not None
    assert settings.models[0].api_key.get_secret_value() == "fallback"
    assert str(settings.data_dir) == "${HOME}/x"


def test_env_overrides_nested_fields(tmp_path: Path) -> None:
    env = {"EXAMPLE_KEY": "k", "IGW_SERVER__PORT": "9123", "IGW_DATA_DIR": "/tmp/igw-x"}
    settings = load_settings(write(tmp_path, MODEL), env=env)
    assert settings.server.port == 9123
    assert str(settings.data_dir) == "/tmp/igw-x"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("server:\n  port: not-a-port\n", "server.port"),
        ("server:\n  prot: 1\n", "server.prot"),
        (
            "models:\n  - {alias: a, provider: nope, base_url: http://x, model: m}\n",
            "models[0].provider",
        ),
        (
            "models:\n  - {alias: a, provider: openai, base_url: ftp://x, model: m}\n",
            "models[0].base_url",
        ),
        ("models:\n  - {alias: a, provider: openai, base_url: http://x}\n", "models[0].model"),
        (
            "models:\n  - {alias: a, provider: openai, base_url: http://x, model: m}\n"
            "  - {alias: a, provider: openai, base_url: http://y, model: m}\n",
            "used twice",
        ),
        (
            "models:\n  - {alias: a, provider: openai, base_url: http://x, model: m,"
            " deployment: 'a.b'}\n",
            "a.b",
        ),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    assert field in str(info.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "models: [\n"), env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), env={})


def test_igw_config_env_points_at_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MODEL)
    settings = load_settings(env={"IGW_CONFIG": str(path), "EXAMPLE_KEY": "k"})
    assert settings.models[0].alias == "fast"


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parents[3] / "deploy" / "igw.example.yaml"
    settings = load_settings(example, env={})
    assert settings.models
