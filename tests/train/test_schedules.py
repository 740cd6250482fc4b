"""Learning-rate schedules against their closed forms."""

import numpy as np
import pytest

from dynamics.registry import ConfigError
from dynamics.train.schedules import SCHEDULES

STEPS = np.array([0, 1, 5, 10, 37, 50, 99, 100])


def _values(name, **kwargs):
    schedule = SCHEDULES.build(name, dict(learning_rate=0.5, num_steps=100, **kwargs))
    return np.array([float(schedule(s)) for s in STEPS])


def test_constant():
    np.testing.assert_allclose(_values("constant"), 0.5)


def test_linear_warmup():
    expected = 0.1 + (0.5 - 0.1) * np.minimum(STEPS / 10, 1)
    values = _values("linear_warmup", warmup_steps=10, init_value=0.1)
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_cosine():
    expected = 0.5 * (0.2 + 0.8 * (1 + np.cos(np.pi * STEPS / 100)) / 2)
    np.testing.assert_allclose(_values("cosine", alpha=0.2), expected, rtol=1e-6)


def test_warmup_cosine():
    warm = 0.5 * STEPS / 10
    frac = np.clip((STEPS - 10) / 90, 0, 1)
    decay = 0.01 + (0.5 - 0.01) * (1 + np.cos(np.pi * frac)) / 2
    expected = np.where(STEPS < 10, warm, decay)
    np.testing.assert_allclose(
        _values("warmup_cosine", warmup_steps=10, end_value=0.01), expected, rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    "decay,shape",
    [
        ("linear", lambda s: 1 - s),
        ("cosine", lambda s: (1 + np.cos(np.pi * s)) / 2),
        ("1-sqrt", lambda s: 1 - np.sqrt(s)),
    ],
)
def test_wsd_against_its_closed_form(decay, shape):
    # Warm-up 0.1 -> 0.5 over 10 steps, 0.5 until step 75, then the decay to 0.01 at step 100.
    steps = np.arange(101)
    kwargs = dict(warmup_steps=10, decay_fraction=0.25, decay=decay, init_value=0.1)
    schedule = SCHEDULES.build(
        "wsd", dict(learning_rate=0.5, num_steps=100, end_value=0.01, **kwargs)
    )
    values = np.array([float(schedule(t)) for t in steps])
    s = np.clip((steps - 75) / 25, 0, 1)
    expected = np.where(
        steps < 10, 0.1 + 0.4 * steps / 10, np.where(steps < 75, 0.5, 0.01 + 0.49 * shape(s))
    )
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-7)
    assert values[100] == pytest.approx(0.01) and values[75] == pytest.approx(0.5)


def test_wsd_errors():
    base = dict(learning_rate=1.0, num_steps=10)
    with pytest.raises(ConfigError, match="valid choices: linear, cosine, 1-sqrt"):
        SCHEDULES.build("wsd", {**base, "decay": "exp"}, "optimizer.schedule")
    with pytest.raises(ConfigError, match="exceed num_steps = 10"):
        SCHEDULES.build("wsd", {**base, "warmup_steps": 9}, "optimizer.schedule")


def test_unknown_schedule_field():
    with pytest.raises(ConfigError, match=r"optimizer\.schedule\.warmup .*warmup_steps"):
        SCHEDULES.build(
            "warmup_cosine",
            dict(learning_rate=1.0, num_steps=10, warmup=3),
            where="optimizer.schedule",
        )
