"""The one config schema every run shares, and its validation.

Every config file starts from :func:`base_config` and changes what it needs, so command-line
overrides (``--config.optimizer.learning_rate=0.1``) and sweeps name the same fields everywhere.
Extra keys under ``data``, ``model``, ``loss``, ``optimizer``, ``optimizer.schedule``,
``optimizer.filter``, ``optimizer.constraint`` and each probe are keyword arguments of the
constructor that the ``name`` field picks from its registry (see ``docs/design.md``).

:func:`validate` checks names, keyword fields, types and shapes before anything is built or
compiled and raises :class:`dynamics.registry.ConfigError` with one line naming the field and the
valid choices; ``experiments.run`` prints it and exits with code 2.

Example:
  >>> from dynamics.train.config import base_config, validate
  >>> config = base_config()
  >>> config.optimizer.learning_rate = 0.1
  >>> validate(config)
  []
  >>> config.optimizer.schedule.update(name="warmup_cosine", warmup_steps=2000)
  >>> print(*validate(config))  # doctest: +ELLIPSIS
  num_steps = 1000 is shorter than optimizer.schedule.warmup_steps = 2000: the run ends before...
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import numbers

import jax
import ml_collections
from ml_collections import config_dict

from dynamics.registry import ConfigError, Registry, check_kwargs

# Keys the runner consumes itself; every other key of these sections is a constructor kwarg.
RESERVED = {
    "data": ("name", "batch_size"),
    "model": ("name",),
    "loss": ("name",),
    "optimizer": ("name", "learning_rate", "schedule", "filter", "constraint"),
    "optimizer.schedule": ("name",),
    "optimizer.filter": ("name",),
    "optimizer.constraint": ("name",),
}
PRECISIONS = ("float32", "float64")
PROGRAMS = ("train", "central_flows")


def base_config() -> ml_collections.ConfigDict:
    """Returns the schema with its defaults (full-batch GD on digits with a tanh MLP).

    Fields:
      seed: seeds parameter init, the dataset split and the minibatch order.
      num_steps: optimizer steps to run.
      log_every: steps between records of the training metrics (loss, accuracy, grad/update/param
        norms of the last step) in ``metrics.jsonl``.
      probes.evaluation.every: steps between full-dataset train/test loss and accuracy (0: only
        at step 0 and at the end; the last step always evaluates). The other probes are off
        until named (``probes.<name>.every``).
      eval_every: None, or the deprecated alias of ``probes.evaluation.every`` (it replaces it,
        with a warning).
      checkpoint_every: steps between checkpoints (0: only at the end).
      keep_checkpoints: how many recent checkpoints to keep.
      precision: ``"float32"`` or ``"float64"`` (turns on JAX's x64 mode for the run).
      data.name, data.batch_size: dataset from ``DATASETS``; ``batch_size`` None (or 0) means full
        batch, otherwise shuffled minibatches that are a pure function of ``(seed, step)``.
      model.name, loss.name: from ``MODELS`` and ``LOSSES``.
      optimizer.name, optimizer.learning_rate: from ``OPTIMIZERS``; ``learning_rate`` is the peak
        value the schedule ``optimizer.schedule.name`` (from ``SCHEDULES``) scales.
      optimizer.filter.name, optimizer.constraint.name: optional ``FILTERS`` / ``CONSTRAINTS``
        entries chained before / after the optimizer (None: none).
      probes: ``probes.<name> = dict(every=N, ...)`` entries from ``PROBES``.
      mesh.data, mesh.model: device mesh shape; batches are split over ``data``.
      stop.train_accuracy: stop early once the full-dataset train accuracy reaches this (None: off).
      analysis.name: an ``ANALYSES`` entry summarizing the run into ``summary.json`` (None: off).
      tensorboard: also write TensorBoard event files (needs tensorboardX).
      plots: write the PNG figures of ``dynamics.train.plots`` into ``plots/`` at the end.
      progress: show a progress bar when stdout is a terminal, else a progress line on stderr
        every 10% of the steps.
      program: ``"train"`` (the train loop) or another entry of ``PROGRAMS`` that
        ``experiments.run`` runs instead (``"central_flows"``: ``dynamics.flows.experiment``).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_steps = 1000
    c.log_every = 10
    c.eval_every = config_dict.placeholder(int)
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.precision = "float32"

    c.data = ml_collections.ConfigDict({"name": "digits"})
    c.data.batch_size = config_dict.placeholder(int)
    c.model = ml_collections.ConfigDict({"name": "mlp"})
    c.loss = ml_collections.ConfigDict({"name": "mse"})

    c.optimizer = ml_collections.ConfigDict({"name": "sgd", "learning_rate": 0.01})
    c.optimizer.schedule = ml_collections.ConfigDict({"name": "constant"})
    c.optimizer.filter = ml_collections.ConfigDict({"name": config_dict.placeholder(str)})
    c.optimizer.constraint = ml_collections.ConfigDict({"name": config_dict.placeholder(str)})

    c.probes = ml_collections.ConfigDict({"evaluation": {"every": 100}})
    c.mesh = ml_collections.ConfigDict({"data": 1, "model": 1})
    c.stop = ml_collections.ConfigDict({"train_accuracy": config_dict.placeholder(float)})
    c.analysis = ml_collections.ConfigDict({"name": config_dict.placeholder(str)})
    c.tensorboard = False
    c.plots = True
    c.progress = True
    c.program = "train"
    return c


def evaluation_every(config: ml_collections.ConfigDict) -> int:
    """Steps between full-dataset evaluations: ``probes.evaluation.every``, or its deprecated
    alias ``eval_every`` where that is set (0: only at step 0 and at the end)."""
    if config.get("eval_every") is not None:
        return config.eval_every
    return config.probes.evaluation.every if "evaluation" in config.probes else 0


def section_kwargs(config: ml_collections.ConfigDict, path: str) -> dict:
    """The constructor keyword arguments of a config section: its keys minus the reserved ones."""
    section = _get(config, path)
    reserved = RESERVED.get(path, ("name",))
    return {k: _plain(v) for k, v in section.items() if k not in reserved}


def _plain(value):
    """ConfigDicts and lists from a config as plain dicts and tuples (hashable, jit-friendly)."""
    if isinstance(value, ml_collections.ConfigDict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _get(config, path):
    for part in path.split("."):
        config = config[part]
    return config


def _check_int(config, path, minimum):
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{path} must be an integer >= {minimum}, got {value!r}")


def _check_named(config, path, registry: Registry, optional=False):
    """Checks ``<path>.name`` is in ``registry`` and its other keys are constructor kwargs."""
    name = _get(config, path).get("name")
    if name is None and optional:
        return
    if not isinstance(name, str):
        raise ConfigError(
            f"{path}.name must be a string; valid choices: {', '.join(registry.names())}"
        )
    fn = registry.get(name, where=path)
    check_kwargs(fn, section_kwargs(config, path), path)


def registries():
    """The registries configs name things from, imported here so every entry is registered."""
    from dynamics.analysis import ANALYSES
    from dynamics.data import DATASETS
    from dynamics.losses import LOSSES
    from dynamics.models import MODELS
    from dynamics.optim import CONSTRAINTS, FILTERS, OPTIMIZERS
    from dynamics.train.probes import PROBES
    from dynamics.train.schedules import SCHEDULES

    return dict(
        data=DATASETS,
        model=MODELS,
        loss=LOSSES,
        optimizer=OPTIMIZERS,
        schedule=SCHEDULES,
        filter=FILTERS,
        constraint=CONSTRAINTS,
        probe=PROBES,
        analysis=ANALYSES,
    )


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_schedule(config: ml_collections.ConfigDict, schedules: Registry) -> list[str]:
    """Refuses a learning rate that is not positive and a schedule that ends above its peak;
    returns warnings for what may be meant (a run shorter than its warm-up, a warm-up that starts
    above the peak)."""
    lr = config.optimizer.learning_rate
    if not _is_number(lr) or lr <= 0:
        raise ConfigError(f"optimizer.learning_rate must be a number > 0, got {lr!r}")
    fn = schedules.get(config.optimizer.schedule.name)
    kwargs = {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    kwargs.update(section_kwargs(config, "optimizer.schedule"))
    kwargs = {k: v for k, v in kwargs.items() if _is_number(v)}
    where = "optimizer.schedule"
    for key in ("init_value", "end_value"):
        if kwargs.get(key, 0) < 0:
            raise ConfigError(f"{where}.{key} must be >= 0, got {kwargs[key]!r}")
    if kwargs.get("end_value", 0) > lr:
        raise ConfigError(
            f"{where}.end_value = {kwargs['end_value']!r} is above the peak "
            f"optimizer.learning_rate = {lr!r}: the schedule would end above its peak"
        )
    if not 0 <= kwargs.get("alpha", 0) <= 1:
        raise ConfigError(
            f"{where}.alpha = {kwargs['alpha']!r} must be in [0, 1]: the schedule ends at "
            "alpha * optimizer.learning_rate"
        )
    warnings = []
    if kwargs.get("init_value", 0) > lr:
        warnings.append(
            f"{where}.init_value = {kwargs['init_value']!r} is above the peak "
            f"optimizer.learning_rate = {lr!r}: the warm-up goes down"
        )
    if "warmup_steps" in kwargs and config.num_steps < kwargs["warmup_steps"]:
        warnings.append(
            f"num_steps = {config.num_steps} is shorter than {where}.warmup_steps = "
            f"{kwargs['warmup_steps']}: the run ends before the learning rate reaches its peak"
        )
    return warnings


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> list[str]:
    """Raises ConfigError naming the first invalid field; returns warnings for a valid config.

    Checks the registry names and keyword fields of every section, the types and ranges of the
    loop's integers, the precision, the learning rate and its schedule (a learning rate that is
    not positive, or a schedule that ends above its peak, is refused; a run shorter than its
    warm-up, or a warm-up from above the peak, is a warning: a short trial of a long run means
    it), and that the mesh fits the devices and divides the batch.
    Dataset-dependent shapes (batch larger than the training set) are checked when the dataset is
    built (:func:`dynamics.train.build.build`).
    """
    reg = registries()
    for path in ("seed",):
        _check_int(config, path, 0)
    for path in ("num_steps", "log_every", "keep_checkpoints", "mesh.data", "mesh.model"):
        _check_int(config, path, 1)
    _check_int(config, "checkpoint_every", 0)
    warnings = []
    if config.eval_every is not None:
        _check_int(config, "eval_every", 0)
        warnings.append(
            f"eval_every is a deprecated alias: write probes.evaluation.every={config.eval_every}"
        )
    if config.get("program", "train") not in PROGRAMS:
        raise ConfigError(
            f"unknown program {config.program!r}; valid choices: {', '.join(PROGRAMS)}"
        )
    if config.precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {config.precision!r} in precision; valid choices: "
            + ", ".join(PRECISIONS)
        )

    _check_named(config, "data", reg["data"])
    _check_named(config, "model", reg["model"])
    _check_named(config, "loss", reg["loss"])
    _check_named(config, "optimizer", reg["optimizer"])
    _check_named(config, "optimizer.schedule", reg["schedule"])
    _check_named(config, "optimizer.filter", reg["filter"], optional=True)
    _check_named(config, "optimizer.constraint", reg["constraint"], optional=True)
    warnings += _check_schedule(config, reg["schedule"])

    for name, probe in config.probes.items():
        where = f"probes.{name}"
        if not isinstance(probe, ml_collections.ConfigDict):
            raise ConfigError(f"{where} must be a dict with at least 'every', got {probe!r}")
        if name not in reg["probe"]:
            raise ConfigError(
                f"unknown probe {name!r} in {where}; "
                f"valid choices: {', '.join(reg['probe'].names())}"
            )
        fn = reg["probe"].get(name)
        kwargs = _plain(probe)
        if "every" not in kwargs:
            raise ConfigError(f"{where}.every is missing: steps between two calls of the probe")
        _check_int(config, f"{where}.every", 0 if name == "evaluation" else 1)
        check_kwargs(fn, kwargs, where)

    if config.analysis.name is not None:
        reg["analysis"].get(config.analysis.name, where="analysis")
    target = config.stop.train_accuracy
    if target is not None and not 0 < target <= 1:
        raise ConfigError(f"stop.train_accuracy must be in (0, 1], got {target!r}")
    if target is not None and not evaluation_every(config):
        raise ConfigError(
            "stop.train_accuracy needs probes.evaluation.every > 0: it reads the full-dataset "
            "train accuracy"
        )

    if config.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError("tensorboard = True needs tensorboardX: pip install -e '.[tensorboard]'")

    num_devices = jax.device_count() if num_devices is None else num_devices
    mesh_size = config.mesh.data * config.mesh.model
    if mesh_size > num_devices:
        raise ConfigError(
            f"mesh.data * mesh.model = {mesh_size} is larger than the {num_devices} devices "
            "available"
        )
    batch_size = config.data.batch_size
    if batch_size is not None:
        _check_int(config, "data.batch_size", 0)
        if batch_size and batch_size % config.mesh.data:
            raise ConfigError(
                f"data.batch_size = {batch_size} is not divisible by mesh.data = {config.mesh.data}"
            )
    return warnings


def parse_value(raw: str):
    """A command-line value as Python: a literal (number, tuple, None, True, ...) or the string."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_override(config: ml_collections.ConfigDict, key: str, raw: str):
    """``raw`` for the field ``key``: kept as text where the field holds a string, else parsed."""
    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return parse_value(raw)
        node = node[part]
    return raw if isinstance(node, str) else parse_value(raw)


def _unknown(node: ml_collections.ConfigDict, key: str, depth: int, prefix: str) -> ConfigError:
    """``unknown field config.KEY (did you mean FIELD?)``, or the valid fields when none is close.

    ``depth`` is the index of the first part of ``key`` that ``node`` lacks.
    """
    parts = key.split(".")
    names = sorted(node.keys())
    close = difflib.get_close_matches(parts[depth], names, n=1)
    path = ".".join([*parts[:depth], *close])
    hint = f" (did you mean {path}?)" if close else f"; valid fields: {', '.join(names)}"
    return ConfigError(f"{prefix}unknown field config.{key}{hint}")


def set_field(
    config: ml_collections.ConfigDict,
    key: str,
    value,
    where: str | None = None,
    add: bool = False,
) -> None:
    """Sets the dotted field ``key`` of ``config`` to ``value``; raises ConfigError if it cannot.

    Every field must exist already, with two exceptions that :func:`validate` checks against the
    constructors instead: naming a probe adds it (``probes.sharpness.every=50`` turns the
    sharpness probe on, and its keyword fields may be set freely), and a section whose extra keys
    are constructor arguments (``data``, ``model``, ``optimizer``, ...) takes new ones
    (``optimizer.eps_root=1e-16`` in a sweep arm that switches to Adam). With ``add`` (a config
    file's presets, which define the fields as its body does) the leaf may be new anywhere.
    ``where`` (e.g. ``"sweep run 3"``) starts the error message; a misspelled field is named
    with the closest existing one: ``unknown field config.num_stepz (did you mean num_steps?)``.
    """
    prefix = f"{where}: " if where else ""
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        if part not in node:
            if parents[:depth] != ["probes"]:
                raise _unknown(node, key, depth, prefix)
            with node.unlocked():
                node[part] = ml_collections.ConfigDict()
        node = node[part]
    section = ".".join(parents)
    if leaf not in node and not add and parents[:1] != ["probes"] and section not in RESERVED:
        raise _unknown(node, key, len(parents), prefix)
    try:
        with node.unlocked():
            node[leaf] = value
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix}config.{key} = {value!r}: {' '.join(str(e).split())}") from None
