"""Config validation: every kind of error is one ConfigError line naming the field and choices."""

import re

import ml_collections
import pytest

from configs import classification
from dynamics.data import load_dataset
from dynamics.registry import ConfigError
from dynamics.train.build import build
from dynamics.train.config import base_config, parse_value, section_kwargs, set_field, validate


def _config(**changes):
    config = classification.get_config("digits_mlp")
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        with node.ignore_type():
            node[leaf] = value
    return config


def test_presets_and_base_config_validate():
    validate(base_config())
    validate(classification.get_config("digits_mlp"))
    validate(classification.get_config("modular_mlp"))


@pytest.mark.parametrize(
    "changes, field, choice",
    [
        ({"model.name": "mlpp"}, "model.name", "mlp"),
        ({"data.name": "digitz"}, "data.name", "digits"),
        ({"loss.name": "l2"}, "loss.name", "cross_entropy"),
        ({"optimizer.name": "adamm"}, "optimizer.name", "adamw"),
        ({"optimizer.schedule.name": "cos"}, "optimizer.schedule.name", "warmup_cosine"),
        ({"optimizer.filter.name": "nope"}, "optimizer.filter.name", "grokfast_ema"),
        ({"optimizer.constraint.name": "nope"}, "optimizer.constraint.name", ""),
        ({"model.depth": 3}, "model.depth", "widths"),
        ({"optimizer.betas": 0.9}, "optimizer.betas", "learning_rate"),
        ({"optimizer.schedule.warmup": 3}, "optimizer.schedule.warmup", ""),
        ({"num_steps": 0}, "num_steps", ">= 1"),
        ({"log_every": 2.5}, "log_every", "integer"),
        ({"precision": "bfloat16"}, "precision", "float64"),
        ({"optimizer.learning_rate": "fast"}, "optimizer.learning_rate", "number"),
        ({"mesh.data": 16}, "mesh.data", "devices"),
        ({"mesh.data": 8, "data.batch_size": 60}, "data.batch_size", "mesh.data"),
        ({"stop.train_accuracy": 1.5}, "stop.train_accuracy", "(0, 1]"),
    ],
)
def test_invalid_configs_raise_one_line_naming_the_field(changes, field, choice):
    config = _config(**changes)
    with pytest.raises(ConfigError) as err:
        validate(config, num_devices=8)
    message = str(err.value)
    assert "\n" not in message
    leaf = field.rsplit(".", 1)[-1]
    assert field in message or (leaf in message and field.split(".")[0] in message)
    assert choice in message


def test_unknown_probe_and_probe_fields():
    config = _config()
    config.probes = ml_collections.ConfigDict({"sharpnes": {"every": 10}})
    with pytest.raises(ConfigError, match=r"probes\.sharpnes.*evaluation"):
        validate(config)
    config.probes = ml_collections.ConfigDict({"weight_norms": {"every": 10, "ord": 2}})
    with pytest.raises(ConfigError, match=r"probes\.weight_norms\.ord"):
        validate(config)
    config.probes = ml_collections.ConfigDict({"weight_norms": {}})
    with pytest.raises(ConfigError, match=r"probes\.weight_norms\.every"):
        validate(config)


def test_build_reports_shapes_only_the_data_knows():
    num_train = len(load_dataset({"name": "digits"}, seed=0).train["y"])
    with pytest.raises(
        ConfigError, match=rf"data\.batch_size = 5000 is larger than .* {num_train}"
    ):
        build(_config(**{"data.batch_size": 5000}))
    # A full batch that does not split evenly over the data shards.
    shards = next(d for d in range(2, 9) if num_train % d)
    with pytest.raises(ConfigError, match=rf"mesh\.data = {shards}"):
        build(_config(**{"mesh.data": shards}))
    # A classification loss on regression targets: only tracing init + forward + loss tells.
    config = _config()
    config.data = ml_collections.ConfigDict({"name": "synthetic", "kind": "teacher"})
    config.data.batch_size = None
    config.loss.name = "cross_entropy"
    with pytest.raises(ConfigError, match=r"model 'mlp' and loss 'cross_entropy' do not fit"):
        build(config)


def test_section_kwargs_leave_out_the_runner_keys():
    config = _config(**{"data.batch_size": 32})
    assert section_kwargs(config, "data") == {}
    assert section_kwargs(config, "model") == {"widths": (64, 64), "activation": "tanh"}
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.5
    assert section_kwargs(config, "optimizer") == {"momentum": 0.5}


def test_set_field_adds_probes_and_constructor_kwargs_only():
    config = base_config()
    config.lock()
    set_field(config, "probes.sharpness.every", 50)
    set_field(config, "probes.sharpness.k", 3)
    config.optimizer.name = "adam"
    set_field(config, "optimizer.eps_root", 1e-16)  # a kwarg the base config does not list
    validate(config)
    assert config.probes.sharpness.k == 3 and config.optimizer.eps_root == 1e-16
    # New keys elsewhere are typos: refused at once, with the field named.
    for key in ("mesh.dat", "stop.loss", "num_step", "optimizer.schedule.foo.bar"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            set_field(config, key, 1)
    # A misspelled kwarg is accepted by set_field and caught by validate, with the valid fields.
    set_field(config, "optimizer.eps_rot", 1e-16)
    with pytest.raises(
        ConfigError, match="optimizer.eps_rot .*valid fields: b1, b2, eps, eps_root"
    ):
        validate(config)
    with pytest.raises(ConfigError, match="num_steps = 'many'"):
        set_field(config, "num_steps", parse_value("many"))
    assert parse_value("(8, 8)") == (8, 8) and parse_value("None") is None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"optimizer.learning_rate": 0.0}, "optimizer.learning_rate must be a number > 0, got 0.0"),
        ({"optimizer.learning_rate": -0.1}, "optimizer.learning_rate must be a number > 0"),
        (
            {"optimizer.schedule.name": "warmup_cosine", "optimizer.schedule.end_value": 0.02},
            "end_value = 0.02 is above the peak optimizer.learning_rate = 0.01",
        ),
        (
            {"optimizer.schedule.name": "cosine", "optimizer.schedule.alpha": 1.5},
            "optimizer.schedule.alpha = 1.5 must be in [0, 1]",
        ),
        (
            {"optimizer.schedule.name": "linear_warmup", "optimizer.schedule.init_value": -1.0},
            "optimizer.schedule.init_value must be >= 0",
        ),
    ],
)
def test_learning_rates_and_schedules_that_cannot_be_meant_are_refused(changes, message):
    config = base_config()
    for key, value in changes.items():
        set_field(config, key, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(config)


def test_a_run_shorter_than_its_warmup_is_a_warning():
    config = base_config()
    config.num_steps = 50
    set_field(config, "optimizer.schedule.name", "warmup_cosine")
    # warmup_cosine's default warm-up is 100 steps: a 50-step trial never reaches the peak.
    assert validate(config) == [
        "num_steps = 50 is shorter than optimizer.schedule.warmup_steps = 100: the run ends "
        "before the learning rate reaches its peak"
    ]
    set_field(config, "optimizer.schedule.warmup_steps", 50)
    set_field(config, "optimizer.schedule.end_value", 0.01)  # ends at the peak: allowed
    assert validate(config) == []
    set_field(config, "optimizer.schedule.init_value", 0.05)
    assert validate(config) == [
        "optimizer.schedule.init_value = 0.05 is above the peak optimizer.learning_rate = 0.01: "
        "the warm-up goes down"
    ]


def test_unknown_fields_are_named_with_the_closest_one():
    config = base_config()
    for key, message in [
        ("num_stepz", "unknown field config.num_stepz (did you mean num_steps?)"),
        ("mesh.dat", "unknown field config.mesh.dat (did you mean mesh.data?)"),
        ("stop.loss", "unknown field config.stop.loss; valid fields: train_accuracy"),
    ]:
        with pytest.raises(ConfigError) as e:
            set_field(config, key, 1)
        assert str(e.value) == message
    with pytest.raises(ConfigError, match=r"^sweep run 3: unknown field config.num_stepz "):
        set_field(config, "num_stepz", 1, where="sweep run 3")


def test_evaluation_is_a_probe_and_eval_every_a_warned_alias():
    config = base_config()
    assert config.probes.evaluation.every == 100 and config.eval_every is None
    assert validate(config) == []
    assert build(config).probes["evaluation"].every == 100
    config.probes.evaluation.every = 0  # only at step 0 and at the end (the last step)
    validate(config)
    assert build(config).probes["evaluation"].every == config.num_steps
    config.eval_every = 40  # the alias replaces the probe's field, with a warning naming it
    assert validate(config) == [
        "eval_every is a deprecated alias: write probes.evaluation.every=40"
    ]
    assert build(config).probes["evaluation"].every == 40
    config.eval_every = -1
    with pytest.raises(ConfigError, match="eval_every must be an integer >= 0"):
        validate(config)
    config.eval_every = None
    config.probes.weight_norms = dict(every=0)  # only the evaluation probe may be 0
    with pytest.raises(ConfigError, match="probes.weight_norms.every must be an integer >= 1"):
        validate(config)
