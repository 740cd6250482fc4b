"""Every preset and every sweep run of the experiment configs passes the runner's validation."""

import pytest

from configs._presets import UnknownPreset
from dynamics.sweep.launch import check_runs, load_sweep
from dynamics.train.config import validate

PRESETS = {
    "edge_of_stability": ["digits", "cifar5k", "momentum", "sam", "cnn"],
    "adaptive_eos": ["adam", "optimizers"],
    "scalar_eos": ["depth2", "depth4", "depth8", "sign_flip", "quadratic"],
    "grokking": ["mlp", "nanda", "grokfast", "mlp_baseline", "mlp_wd", "mlp_grokfast_ema",
                 "mlp_grokfast_ma", "mlp_stablemax", "mlp_orthograd", "grokfast_baseline",
                 "grokfast_ma"],
}  # fmt: skip
CASES = [(name, preset) for name, presets in PRESETS.items() for preset in presets]


@pytest.mark.parametrize("name,preset", CASES)
def test_preset_and_its_sweep_validate(name, preset):
    config, runs = load_sweep(f"configs/{name}.py:{preset}")
    validate(config, num_devices=1)
    assert runs
    check_runs(config, runs)


def test_unknown_preset_names_the_choices():
    with pytest.raises(UnknownPreset, match="valid presets: cifar5k, cnn, digits, momentum, sam$"):
        load_sweep("configs/edge_of_stability.py:digitz")
    with pytest.raises(UnknownPreset, match="unknown preset 'mlp_sgd' for configs/grokking.py"):
        load_sweep("configs/grokking.py:mlp_sgd")


def test_scalar_presets_start_inside_the_assumptions():
    """Positive weights, and S_flat < 2/lr < S(w_0) (checked with the analysis' own formulas)."""
    import jax
    import jax.numpy as jnp

    from dynamics.analysis import scalar

    config, runs = load_sweep("configs/scalar_eos.py")
    with jax.enable_x64(True):
        for run in runs:
            w0 = jnp.asarray(run["model.init_weights"], jnp.float64)
            threshold = 2.0 / run["optimizer.learning_rate"]
            x, y = 1.053115725517273, 1.870850920677185
            assert bool(jnp.all(w0 > 0))
            flat = scalar.flattest_sharpness(run["model.depth"], y, x)
            assert flat < threshold < float(scalar.gfs_sharpness(w0, y, x))
