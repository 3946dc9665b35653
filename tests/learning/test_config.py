"""TrainConfig: one validated config per run; unknown keys and bad values are rejected loudly."""

from __future__ import annotations

import pytest

from proda_engine.learning import TrainConfig


def test_defaults_pick_the_method_loss():
    assert TrainConfig().loss == "mse"
    assert TrainConfig(method="end-to-end").loss == "cost"
    assert TrainConfig().hidden == (256, 512, 512, 256)


def test_unknown_keys_rejected_with_the_valid_list():
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['lerning_rate'\]"):
        TrainConfig.from_dict({"lerning_rate": 0.1})


@pytest.mark.parametrize("bad", [
    {"method": "three-step"},
    {"loss": "cost"},  # an end-to-end loss for the two-step method
    {"method": "end-to-end", "loss": "proda"},
    {"hidden": []},
    {"hidden": [64, 0]},
    {"lr": 0.0},
    {"batch_size": 2.5},
    {"patience": 0},
    {"dropout": 1.0},
    {"device": "tpu"},
    {"dtype": "float16"},
    {"test_fraction": 1.0},
    {"val_fraction": 0.0},
    {"weights": "uniform"},
    {"grad_clip": -1.0},
])
def test_bad_values_rejected(bad):
    with pytest.raises(ValueError, match="TrainConfig"):
        TrainConfig.from_dict(bad)


def test_dict_and_yaml_round_trip(tmp_path):
    cfg = TrainConfig(method="end-to-end", hidden=(32, 16), lr=3e-3, loss="log_mse", weights="depth_exp")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "run.yml"
    path.write_text("train:\n  method: end-to-end\n  hidden: [32, 16]\n  lr: 0.003\n  loss: log_mse\n"
                    "  weights: depth_exp\n")
    assert TrainConfig.from_yaml(path) == cfg
    assert TrainConfig.from_yaml("method: two-step\nbatch_size: 64\n").batch_size == 64
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_yaml("method: two-step\nbatchsize: 64\n")


def test_replace_revalidates():
    cfg = TrainConfig()
    assert cfg.replace(seed=3).seed == 3
    with pytest.raises(ValueError):
        cfg.replace(max_epochs=-1)
