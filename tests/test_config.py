"""One config layer (proda_engine.config): every run config is a frozen pydantic model that refuses unknown
keys by name, states the allowed values of a choice, round-trips through YAML, and gives the CLI its flags."""

from __future__ import annotations

import argparse
from typing import ClassVar

import pydantic
import pytest
import yaml
from pydantic import Field

from proda_engine.cli import _ASSIMILATE_FLAGS, _SCENARIO_FLAGS, _TRAIN_FLAGS, build_parser
from proda_engine.config import ConfigError, PositiveInt, RunConfig, add_config_arguments, config_from_args
from proda_engine.inference.config import AssimilateConfig
from proda_engine.inference.mcmc import MCMCConfig
from proda_engine.learning.config import TrainConfig
from proda_engine.scenario_api import ScenarioConfig

MODELS = [TrainConfig, AssimilateConfig, MCMCConfig, ScenarioConfig]
#: one non-default, valid setting per model (the round trip must carry it)
CHANGED = {TrainConfig: {"method": "end-to-end", "hidden": [32, 16], "loss": "log_mse", "grad_clip": None},
           AssimilateConfig: {"mode": "batch", "seed": 3, "mcmc": {"n_test": 11, "n_formal": 22},
                              "profiles_path": ["a", "b"], "max_distance_km": None},
           MCMCConfig: {"accept_window": [0.15, 0.5], "tempering": "log", "thin": 2},
           ScenarioConfig: {"warming": 2.5, "source": "midpoint,default_clm5", "coarsen": None, "map_years": [3]}}
#: a Literal field and a value it refuses
LITERALS = {TrainConfig: ("optimizer", "sgd"), AssimilateConfig: ("interpolation", "cubic"),
            MCMCConfig: ("posterior", "all")}


@pytest.mark.parametrize("model", MODELS)
def test_every_run_config_is_a_frozen_pydantic_model(model):
    assert issubclass(model, RunConfig) and issubclass(model, pydantic.BaseModel)
    assert model.model_config["extra"] == "forbid" and model.model_config["frozen"]
    cfg = model()
    name = next(iter(model.model_fields))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        setattr(cfg, name, getattr(cfg, name))
    assert cfg.replace() == cfg and cfg.replace() is not cfg


@pytest.mark.parametrize("model", MODELS)
def test_an_extra_key_is_refused_naming_the_key(model):
    with pytest.raises(ConfigError, match="not_a_setting"):
        model.from_dict({"not_a_setting": 1})
    with pytest.raises(ValueError, match="not_a_setting"):  # the constructor too
        model(not_a_setting=1)


@pytest.mark.parametrize("model", list(LITERALS))
def test_a_literal_is_refused_with_the_allowed_values(model):
    key, bad = LITERALS[model]
    allowed = list(model.model_fields[key].annotation.__args__)
    with pytest.raises(ConfigError) as err:
        model.from_dict({key: bad})
    msg = str(err.value)
    assert key in msg and repr(bad) in msg and str(allowed) in msg, msg


def test_errors_name_file_key_expected_and_found(tmp_path):
    p = tmp_path / "run.yml"
    p.write_text("batch_size: 0\nweights: linear\n")
    with pytest.raises(ConfigError) as err:
        AssimilateConfig.from_yaml(p)
    msg = str(err.value)
    assert msg.startswith(str(p)), msg
    assert "key 'batch_size': expected a positive integer, found 0" in msg
    assert "key 'weights': expected one of ['rank', 'depth_exp'], found 'linear'" in msg
    with pytest.raises(ConfigError, match=r"TrainConfig\.lr must be a number > 0, found -1\.0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ConfigError, match=r"TrainConfig\.batch_size must be a positive integer, found 2\.0"):
        TrainConfig(batch_size=2.0)  # strict: a float is not an integer
    with pytest.raises(ConfigError, match="key 'mcmc': unknown MCMC config keys"):
        AssimilateConfig.from_dict({"mcmc": {"n_tset": 3}})


@pytest.mark.parametrize("model", MODELS)
def test_yaml_model_yaml_round_trip(model, tmp_path):
    cfg = model.from_dict(CHANGED[model])
    assert cfg != model()
    path = cfg.save(tmp_path / "config.yaml")
    text = path.read_text()
    back = model.from_yaml(path)
    assert back == cfg and back.to_yaml() == text
    assert yaml.safe_load(text) == cfg.to_dict()
    assert model.from_dict(cfg.to_dict()) == cfg


def test_the_run_seed_keys_the_mcmc_streams():
    cfg = AssimilateConfig.from_dict(CHANGED[AssimilateConfig])
    assert cfg.mcmc.seed == 3 and "seed" not in cfg.to_dict()["mcmc"]
    assert cfg.replace(seed=5).mcmc.seed == 5


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    sub.add_deferred()  # the config flags are added when the command is used (lazy imports)
    return {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings}


@pytest.mark.parametrize("command, model, spec", [("train", TrainConfig, _TRAIN_FLAGS),
                                                  ("assimilate", AssimilateConfig, _ASSIMILATE_FLAGS),
                                                  ("scenario", ScenarioConfig, _SCENARIO_FLAGS)])
def test_cli_flags_are_the_model_fields(command, model, spec):
    flags = _flags(build_parser(), command)
    expected = set(model.model_fields) - set(spec.get("exclude", ()))
    assert expected <= set(flags), expected - set(flags)
    for field, flag in spec.get("rename", {}).items():
        assert flags[field] == f"--{flag}"


def test_cli_flags_build_the_config():
    args = build_parser().parse_args(["train", "--epochs", "3", "--lr", "0.01", "--no-bootstrap", "--hidden", "8",
                                      "4", "--grad-clip", "none", "--members", "2", "--device", "auto"])
    cfg = config_from_args(TrainConfig, args, TrainConfig(max_epochs=9, seed=4), exclude=_TRAIN_FLAGS["exclude"])
    assert (cfg.max_epochs, cfg.lr, cfg.bootstrap, cfg.hidden, cfg.grad_clip, cfg.n_members, cfg.device) == \
        (3, 0.01, False, (8, 4), None, 2, "auto")
    assert cfg.seed == 4  # a flag not given keeps the base config's value
    args = build_parser().parse_args(["scenario", "--source", "a,b", "--source", "c", "--coarsen", "none",
                                      "--map-years", "--out", "x.nc"])
    sc = config_from_args(ScenarioConfig, args, ScenarioConfig(years=7))
    assert sc.source == ["a", "b", "c"] and sc.coarsen is None and sc.map_years == [] and sc.years == 7
    with pytest.raises(SystemExit):  # argparse refuses a choice outside the Literal
        build_parser().parse_args(["assimilate", "--config", "c.yml", "--weights", "linear"])
    args = build_parser().parse_args(["assimilate", "--config", "c.yml", "--workers", "0"])
    with pytest.raises(ConfigError, match="key 'n_workers': expected a positive integer, found 0"):
        config_from_args(AssimilateConfig, args, AssimilateConfig(), exclude=_ASSIMILATE_FLAGS["exclude"])


def test_a_field_added_to_a_model_appears_as_a_flag():
    class Extended(ScenarioConfig):
        label: ClassVar[str] = "extended scenario config"
        spin_up_years: PositiveInt = Field(10, description="years before the ramp")

    parser = argparse.ArgumentParser()
    added = add_config_arguments(parser, Extended)
    assert added == list(Extended.model_fields)
    args = parser.parse_args(["--spin-up-years", "3", "--warming", "1.5"])
    cfg = config_from_args(Extended, args)
    assert cfg.spin_up_years == 3 and cfg.warming == 1.5 and cfg.years == 100
    assert "years before the ramp" in parser.format_help()
    with pytest.raises(ConfigError, match="spin_up_years must be a positive integer, found 0"):
        config_from_args(Extended, parser.parse_args(["--spin-up-years", "0"]))


def test_a_field_without_a_command_line_form_must_be_excluded():
    class Nested(RunConfig):
        inner: MCMCConfig = Field(default_factory=MCMCConfig)

    with pytest.raises(TypeError, match="inner"):
        add_config_arguments(argparse.ArgumentParser(), Nested)
    assert add_config_arguments(argparse.ArgumentParser(), Nested, exclude=["inner"]) == []
