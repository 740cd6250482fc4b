"""Which config changes ``--resume`` accepts (through the command line: test_run_reliability)."""

import json

import pytest

from configs import classification
from dynamics.registry import ConfigError
from dynamics.train import resume
from dynamics.train.config import set_field


def _recorded(tmp_path, config, steps=(100,)):
    """A run directory holding ``config.json`` and complete checkpoints at ``steps``."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(resume.config_record(config)))
    for step in steps:
        (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
    (tmp_path / "checkpoints" / "200.orbax-checkpoint-tmp-1").mkdir()  # a save cut short
    return tmp_path


def _config(**changes):
    config = classification.get_config("digits_mlp")
    config.probes.sharpness = {"every": 50, "k": 1}
    for key, value in changes.items():
        set_field(config, key, value)
    return config


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"num_steps": 1000},
        {
            "log_every": 1,
            "probes.evaluation.every": 7,
            "checkpoint_every": 3,
            "keep_checkpoints": 5,
        },
        {"probes.sharpness.every": 10, "stop.train_accuracy": 0.9, "plots": False},
        {"analysis.name": "edge_of_stability", "progress": False},
    ],
)
def test_extensions_are_accepted_with_their_changes(tmp_path, changes):
    workdir = _recorded(tmp_path, _config())
    plan = resume.plan(workdir, _config(**changes))
    assert plan is not None and plan.history == []
    expected = {k: (_config()[k.split(".")[0]], v) for k, v in changes.items() if "." not in k}
    assert {k: v for k, v in plan.changes.items() if "." not in k} == expected
    assert set(plan.changes) == set(changes)
    entry = plan.entry(100)
    assert entry["step"] == 100 and entry["changed"] == {
        k: list(v) for k, v in plan.changes.items()
    }


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"optimizer.learning_rate": 0.2}, "optimizer.learning_rate (0.1 -> 0.2)"),
        ({"num_steps": 400}, "num_steps (500 -> 400)"),  # downward
        ({"probes.sharpness.k": 2}, "probes.sharpness.k (1 -> 2)"),
        ({"probes.weight_norms": {"every": 5}}, "probes.weight_norms.every ('<absent>' -> 5)"),
        ({"precision": "float64"}, "precision ('float32' -> 'float64')"),
    ],
)
def test_other_changes_are_refused_naming_the_fields(tmp_path, changes, named):
    workdir = _recorded(tmp_path, _config())
    with pytest.raises(ConfigError) as e:
        resume.plan(workdir, _config(**changes))
    assert named in str(e.value) and "\n" not in str(e.value)


def test_num_steps_may_only_grow_under_a_schedule_that_ignores_it(tmp_path):
    cosine = {"optimizer.schedule.name": "cosine"}
    workdir = _recorded(tmp_path, _config(**cosine))
    with pytest.raises(ConfigError, match=r"num_steps \(500 -> 1000, but schedule 'cosine'"):
        resume.plan(workdir, _config(num_steps=1000, **cosine))
    warmup = {"optimizer.schedule.name": "linear_warmup"}
    workdir = _recorded(tmp_path / "warmup", _config(**warmup))
    assert resume.plan(workdir, _config(num_steps=1000, **warmup)).changes == {
        "num_steps": (500, 1000)
    }


def test_no_checkpoint_empty_and_absent_directories(tmp_path):
    assert resume.plan(tmp_path / "absent", _config()) is None
    assert resume.plan(tmp_path, _config()) is None  # empty
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "checkpoints" / "100.orbax-checkpoint-tmp-1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no checkpoint in .*; use --overwrite to start again"):
        resume.plan(tmp_path, _config())


def test_the_history_in_config_json_is_kept_and_not_compared(tmp_path):
    workdir = _recorded(tmp_path, _config())
    record = json.loads((workdir / "config.json").read_text())
    earlier = {"step": 50, "time": "2026-01-01T00:00:00+00:00", "changed": {}}
    record[resume.HISTORY] = [earlier]
    (workdir / "config.json").write_text(json.dumps(record))
    plan = resume.plan(workdir, _config())
    assert plan.changes == {} and plan.history == [earlier]
