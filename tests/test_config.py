"""Config validation: every error names the field, the value given and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunewise.config import Config, ConfigError, apply_overrides, config_from_dict, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"


def test_quickstart_config_loads_and_resolves_data_path() -> None:
    config = load_config(EXAMPLE)
    assert config.method == "lora" and config.model == "smollm2-135m"
    assert Path(config.data.path).is_file(), "data path is resolved relative to the config file"


def test_defaults_are_valid() -> None:
    config = Config()
    assert config.lora.target_modules == "auto"
    assert config.run_dir == Path("runs") / "run"


@pytest.mark.parametrize(
    "override, field, allowed",
    [
        ("lora.r=0", "lora.r", "greater than 0"),
        ("training.learning_rate=5", "training.learning_rate", "less than 1"),
        ("training.learning_rate=0", "training.learning_rate", "greater than 0"),
        ("training.epochs=0", "training.epochs", "greater than 0"),
        ("training.per_device_train_batch_size=-1", "training.per_device_train_batch_size", "greater than 0"),
        ("method=magic", "method", "allowed: full, lora"),
        ("training.optimizer=adam9", "training.optimizer", "adamw_torch"),
        ("training.colour=blue", "training.colour", "unknown field"),
        ("eval.metrics=[exact_match, vibes]", "eval.metrics", "allowed:"),
        ("data.split.train=0.5", "data.split", "sum to 1"),
        ("decide.task=poetry", "decide.task", "'classification', 'extraction'"),
        ("decide.target=2", "decide.target", "less than or equal to 1"),
        ("decide.methods=[lora, magic]", "decide.methods", "allowed: full, lora"),
    ],
)
def test_invalid_values_name_field_value_and_allowed(override: str, field: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({}, [override])
    message = str(info.value)
    assert field in message
    assert allowed in message
    value = override.split("=", 1)[1]
    if not value.startswith("["):
        assert value.strip("-") in message  # the value given is shown


def test_overrides_parse_like_yaml() -> None:
    raw = apply_overrides({"training": {"epochs": 1}}, ["training.learning_rate=1e-4", "lora.target_modules=[q_proj, v_proj]", "training.bf16=null"])
    assert raw["training"]["learning_rate"] == pytest.approx(1e-4)
    assert raw["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert raw["training"]["bf16"] is None
    config = config_from_dict(raw)
    assert config.training.learning_rate == pytest.approx(1e-4)


def test_bad_override_syntax_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        config_from_dict({}, ["training.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_split_counts_are_accepted() -> None:
    config = config_from_dict({"data": {"split": {"train": 100, "val": 10, "test": 20}}})
    assert config.data.split.is_counts


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, ["training.learning_rate=3e-4"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert yaml.safe_load(path.read_text())["training"]["learning_rate"] == pytest.approx(3e-4)


def test_config_methods_match_the_trainable_registry() -> None:
    from tunewise.config import METHODS
    from tunewise.lm.adapters import METHODS as REGISTRY

    assert set(METHODS) == set(REGISTRY)


def test_a_budget_in_money_needs_a_price() -> None:
    with pytest.raises(ConfigError, match="decide.budget_usd needs a price"):
        config_from_dict({}, ["decide.budget_usd=30"])
    assert config_from_dict({}, ["decide.budget_usd=30", "decide.price_per_hour=2.5"]).decide.budget_usd == 30


def test_yaml_off_means_the_word(tmp_path: Path) -> None:
    assert config_from_dict({}, ["monitor.live=off"]).monitor.live == "off"
    path = tmp_path / "c.yaml"
    path.write_text("monitor:\n  live: off\n")
    assert load_config(path).monitor.live == "off"
