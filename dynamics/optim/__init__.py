"""Update rules as optax transforms; importing this package registers them all by name."""

from dynamics.optim.registry import CONSTRAINTS, FILTERS, OPTIMIZERS
