"""The training loop in-process: determinism, resume with probe state, sharding, early stop."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import classification
from dynamics.train.build import build
from dynamics.train.checkpoint import Checkpoints
from dynamics.train.loop import train
from dynamics.train.metrics import read_records
from dynamics.train.probes import Probe


class RunningSum(Probe):
    """A stateful probe: logs the running sum of the parameter norm over its calls."""

    def init(self, ctx, params):
        return {"total": jnp.zeros(())}

    def __call__(self, ctx, step, params, opt_state, probe_state):
        norm = jnp.sqrt(sum(jnp.sum(p**2) for p in jax.tree.leaves(params)))
        total = probe_state["total"] + norm
        return {"running_norm_sum": total}, {"total": total}


def _config(**changes):
    config = classification.get_config("digits_mlp")
    config.model.widths = (16,)
    config.num_steps = 40
    config.log_every = 5
    config.probes.evaluation.every = 10
    config.checkpoint_every = 20
    config.data.batch_size = 64
    config.probes.weight_norms = {"every": 7}
    config.plots = False
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _train(config, workdir, resume=False):
    run = build(config)
    run.probes["running_sum"] = RunningSum(every=10)
    summary = train(run, workdir, resume=resume)
    return summary, read_records(workdir / "metrics.jsonl")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _train(_config(), tmp_path_factory.mktemp("baseline"))


def test_run_writes_the_run_directory(baseline, tmp_path_factory):
    summary, records = baseline
    assert summary["status"] == "completed" and summary["step"] == 40
    steps = [r["step"] for r in records]
    # Step 0 (probes on the initial parameters), every log/probe step, and the last step.
    assert steps == sorted({0, *range(5, 41, 5), *range(7, 41, 7)})
    assert "train_accuracy" in records[0] and "loss" not in records[0]
    assert {"loss", "accuracy", "grad_norm", "update_norm", "param_norm"} <= set(records[1])
    assert summary["final"]["test_accuracy"] == records[-1]["test_accuracy"]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert summary["step_compilations"] == 1


def test_same_config_twice_gives_identical_metrics(baseline, tmp_path):
    _, again = _train(_config(), tmp_path)
    assert again == baseline[1]


def test_resume_with_probe_state_equals_uninterrupted(baseline, tmp_path):
    first, _ = _train(_config(num_steps=20), tmp_path)
    assert first["step"] == 20
    summary, records = _train(_config(), tmp_path, resume=True)
    assert summary["resumed_from"] == 20
    # running_norm_sum at steps 30, 40 is only right if the probe state came back.
    assert records == baseline[1]


@pytest.mark.parametrize("data, model", [(8, 1), (4, 2)])
def test_eight_devices_match_one_and_compile_once(baseline, tmp_path, data, model):
    assert jax.device_count() == 8
    summary, records = _train(_config(**{"mesh.data": data, "mesh.model": model}), tmp_path)
    assert summary["step_compilations"] == 1
    assert summary["mesh"] == {"data": data, "model": model}
    assert [r["step"] for r in records] == [r["step"] for r in baseline[1]]
    for ours, ref in zip(records, baseline[1], strict=True):
        assert ours.keys() == ref.keys()
        for name in ref:
            np.testing.assert_allclose(ours[name], ref[name], rtol=1e-5, err_msg=name)


def test_stop_on_train_accuracy_and_float64(tmp_path):
    config = _config(precision="float64", **{"stop.train_accuracy": 0.5})
    summary, records = _train(config, tmp_path)
    assert summary["status"] == "completed" and summary["stopped_early"]
    assert summary["step"] < 40 and summary["step"] % 10 == 0
    assert records[-1]["train_accuracy"] >= 0.5
    assert all(r["train_accuracy"] < 0.5 for r in records[:-1] if "train_accuracy" in r)

    ckpt = Checkpoints(tmp_path / "checkpoints", keep=2)
    assert ckpt.latest_step() == summary["step"]
    with jax.enable_x64(True):
        state = ocp.PyTreeCheckpointer().restore(
            tmp_path / "checkpoints" / str(ckpt.latest_step()) / "state"
        )
    leaves = jax.tree.leaves(state["params"])
    assert leaves and all(np.asarray(p).dtype == np.float64 for p in leaves)


def test_tensorboard_events_from_a_run(tmp_path):
    config = _config(tensorboard=True, num_steps=10)
    _train(config, tmp_path)
    (events,) = (tmp_path / "tensorboard").iterdir()
    assert events.name.startswith("events.out.tfevents")
    data = events.read_bytes()
    for tag in (b"loss", b"train_accuracy", b"running_norm_sum"):
        assert tag in data, tag
