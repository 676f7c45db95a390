"""training.learning_rate: null (the default) = automatic, from the method, the objective and the model's size."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tunewise.config import config_from_dict
from tunewise.lm.adapters import count_parameters
from tunewise.train.learning_rate import automatic_learning_rate, resolve_learning_rate


@pytest.mark.parametrize(("method", "rate"), [("lora", 1e-3), ("dora", 1e-3), ("qlora", 1e-3), ("full", 1e-4),
                                              ("ia3", 3e-3), ("prompt", 3e-2)])
def test_each_method_gets_its_own_rate(method: str, rate: float) -> None:
    chosen = automatic_learning_rate(method, "sft", 135_000_000)
    assert chosen == {"learning_rate": rate, "source": "automatic", "reason": method}


def test_large_models_and_preference_objectives_take_smaller_steps() -> None:
    large = automatic_learning_rate("lora", "sft", 8_000_000_000)
    assert large["learning_rate"] == pytest.approx(3e-4) and "8.0B parameters" in large["reason"]
    assert automatic_learning_rate("lora", "dpo", 135_000_000)["learning_rate"] == pytest.approx(2e-4)
    both = automatic_learning_rate("full", "orpo", 70_000_000_000)
    assert both["learning_rate"] == pytest.approx(6e-6) and "orpo" in both["reason"] and "70.0B" in both["reason"]


def test_a_written_rate_wins_and_the_config_as_written_stays_null() -> None:
    written = config_from_dict({"training": {"learning_rate": 5e-5}})
    assert resolve_learning_rate(written, 10**6) == (written, {"learning_rate": 5e-5, "source": "config",
                                                               "reason": "training.learning_rate"})
    config = config_from_dict({"method": "full"})
    assert config.training.learning_rate is None
    resolved, chosen = resolve_learning_rate(config, 10**6)
    assert resolved.training.learning_rate == pytest.approx(1e-4) and chosen["source"] == "automatic"
    assert config.training.learning_rate is None, "the fingerprint compares the config as written"


def test_training_arguments_refuse_an_unresolved_rate(tmp_path) -> None:
    from tunewise.lm.device import resolve_precision
    from tunewise.train.run import training_arguments

    config = config_from_dict({"training": {"max_steps": 2}})
    with pytest.raises(ValueError, match="resolve_learning_rate"):
        training_arguments(config, tmp_path, has_eval=False, precision=resolve_precision(device="cpu"))


def test_a_4_bit_weight_counts_by_its_shape_not_its_packed_storage() -> None:
    model = torch.nn.Linear(8, 4, bias=False)
    assert count_parameters(model) == (32, 32)
    packed = torch.nn.Parameter(torch.zeros(16, 1, dtype=torch.uint8), requires_grad=False)  # two 4-bit values a byte
    packed.quant_state = SimpleNamespace(shape=torch.Size([4, 8]))
    model.weight = packed
    assert count_parameters(model) == (0, 32)
