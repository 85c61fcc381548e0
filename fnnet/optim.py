"""Optimizers: `Optimizer(init, step)` pairs over parameter pytrees.

Hyperparameters live in the optimizer state as arrays, so changing them never
recompiles a jitted step and `jax.vmap` over them trains a sweep:

    states = jax.vmap(lambda p, lr: opt.init(p, lr=lr))(stacked_params, lrs)

The learning rate at step t (t = steps already taken, starting at 0) is
`lr * decay**t`, times `schedule(t)` when `lr` was given as a schedule.
"""

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._shared import shared
from fnnet._types import Array, ScalarOrSchedule
from fnnet.state import trainable_mask

__all__ = ["Optimizer", "OptState", "SGD", "Adam"]


class Optimizer(NamedTuple):
    """`init(params, **hyperparams) -> state`; `step(params, grads, state) -> (params, state)`.

    `schedule` is the lr schedule given to the constructor (None for a constant
    lr), which training checks over a whole run before starting; `name` names
    the optimizer in errors. `step` leaves every leaf under a `fnnet.State`
    (running statistics) as it is.
    """

    init: Callable
    step: Callable
    schedule: Optional[Callable] = None
    name: str = "optimizer"

    # Optimizers that step the same way are equal and share compiled programs: `init`,
    # which holds the default hyperparameters (data in the state), is not compared.
    def __eq__(self, other):
        return isinstance(other, Optimizer) and self[1:] == other[1:]

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self[1:])


class OptState(NamedTuple):
    """count: int32 steps taken; hyperparams: name -> array; slots: name -> params-like buffer."""

    count: Array
    hyperparams: dict
    slots: dict


# name -> (test on a numpy array, what the test means)
_RULES = {
    "lr": (lambda v: v > 0, "> 0"),
    "decay": (lambda v: (v > 0) & (v <= 1), "in (0, 1]"),
    "momentum": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "b1": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
    "b2": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
    "eps": (lambda v: v > 0, "> 0"),
}


def _check_hyperparam(owner, name, value, dtype=None):
    """Raise unless a hyperparameter is a scalar number that keeps its rule; a tracer (inside
    vmap or jit) is checked for its shape only. With `dtype`, the value must also keep its
    rule once cast to it (1e-50 is an lr > 0, but 0 in float32)."""
    try:
        array = np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        array = None
    except (TypeError, ValueError):
        array = np.asarray(None)
    # Numbers only: not bool, None or str (np.asarray("0.1", float) would read 0.1).
    if array is not None and array.dtype.kind not in "iuf":
        raise TypeError(f"{owner}: {name} must be a number or an array, got {value!r}")
    test, meaning = _RULES[name]
    if array is not None and not (np.all(np.isfinite(array.astype(np.float64)))
                                  and np.all(test(array.astype(np.float64)))):
        raise ValueError(f"{owner}: {name} must be {meaning}, got {array.tolist()!r}")
    if jnp.shape(value) != ():  # it would broadcast against the params, or fail mid-step
        raise ValueError(f"{owner}: {name} must be a scalar (one value per run; vmap over "
                         f"opt.init for a sweep), got an array of shape {jnp.shape(value)}")
    if array is not None and dtype is not None:
        with np.errstate(over="ignore"):  # an overflow to inf is what this looks for
            cast = np.asarray(array, dtype)
        if not (np.isfinite(cast) and test(cast.astype(np.float64))):
            raise ValueError(f"{owner}: {name} must be {meaning} in the params' dtype "
                             f"{np.dtype(dtype).name}, got {array.tolist()!r}, which is {cast} there")
    return value


def valid_hyperparams(hyperparams: dict, numpy=jnp) -> dict:
    """name -> bool array shaped like its value: finite and within its rule.

    Elementwise, so a sweep's stacked values give one answer per member, and it
    runs on tracers (inside `vmap` or `jit`); `numpy=np` runs it on the host.
    """
    return {name: numpy.isfinite(value) & _RULES[name][0](value)
            for name, value in hyperparams.items() if name in _RULES}


def check_hyperparams(owner: str, opt_state) -> None:
    """Raise ValueError if a concrete hyperparameter in `opt_state` breaks its rule (one
    made inside `vmap`, e.g. `jax.vmap(lambda p, lr: opt.init(p, lr=lr))`, is not checked
    there); tracers and states that are not `OptState`s pass."""
    if isinstance(opt_state, OptState) and isinstance(opt_state.hyperparams, dict):
        for name, value in opt_state.hyperparams.items():
            if name in _RULES:
                _check_hyperparam(f"{owner}: opt_state", name, value)


def _check_schedule(owner, schedule, steps=1):
    """Raise ValueError unless `schedule(t)` is a finite scalar > 0 for t < steps."""
    with jax.ensure_compile_time_eval():  # concrete even when called while tracing
        lrs = np.asarray(schedule(jnp.arange(steps, dtype=jnp.int32)))
    if lrs.shape != (steps,):
        raise ValueError(f"{owner}: the lr schedule must map a step to a scalar (steps of shape "
                         f"({steps},) to lrs of shape ({steps},)), got lrs of shape {lrs.shape}")
    bad = ~(np.isfinite(lrs) & (lrs > 0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"{owner}: the lr schedule must give a finite lr > 0 at every step, "
                         f"got {lrs[first]} at step {first}")


def check_schedule(opt: Optimizer, steps: int) -> None:
    """Raise ValueError if `opt`'s lr schedule (if any) is bad within `steps` steps."""
    if opt.schedule is not None:
        _check_schedule(opt.name, opt.schedule, steps)


def _optimizer(owner: str, lr: ScalarOrSchedule, hyperparams: dict, slot_names, update,
               hints: Optional[dict] = None) -> Optimizer:
    """Build an Optimizer from its hyperparameters and a shared jitted-friendly step.

    `hints`: name -> why `init` cannot set it, added to that error."""
    schedule: Optional[Callable] = None
    if callable(lr):
        _check_schedule(owner, lr)
        schedule, lr = lr, 1.0  # the state's lr then scales the schedule
    defaults = {"lr": lr, **hyperparams}
    for name, value in defaults.items():
        _check_hyperparam(owner, name, value)

    def init(params, **overrides):
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            why = "".join(f"; {hints[name]}" for name in unknown if name in (hints or {}))
            raise TypeError(f"{owner}.init: unknown hyperparameter(s) {unknown}; "
                            f"expected some of {sorted(defaults)}{why}")
        values = {**defaults, **overrides}
        _check_trainable_floats(f"{owner}.init", params)
        # hyperparameters in the params' float dtype (float32 for float32 models, even under x64)
        floats = [leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
        dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
        return OptState(
            count=jnp.zeros((), jnp.int32),
            hyperparams={k: jnp.asarray(_check_hyperparam(owner, k, v, dtype), dtype)
                         for k, v in values.items()},
            slots={name: jax.tree.map(jnp.zeros_like, params) for name in slot_names},
        )

    step = _step(owner, update, schedule, tuple(sorted(defaults)), tuple(slot_names))
    return Optimizer(init, step, schedule, owner)


def _check_trainable_floats(owner, params):
    """Raise TypeError unless every trainable leaf is a floating-point array: a step would
    cut an integer leaf's update to an integer (or fail on a Python number)."""
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), trainable in zip(paths_and_leaves, jax.tree.leaves(trainable_mask(params))):
        if trainable and not (hasattr(leaf, "dtype") and hasattr(leaf, "shape")
                              and jnp.issubdtype(leaf.dtype, jnp.floating)):
            what = f"dtype {leaf.dtype}" if hasattr(leaf, "dtype") else type(leaf).__name__
            raise TypeError(f"{owner}: params must be floating-point arrays (the optimizer "
                            f"moves them), got params{jax.tree_util.keystr(path)} of {what}")


def _check_step_args(owner, hyperparam_names, slot_names, params, grads, state):
    """Trace-time checks of `step`'s arguments: grads and state must fit params."""
    params_tree, grads_tree = jax.tree.structure(params), jax.tree.structure(grads)
    if params_tree != grads_tree:
        raise ValueError(f"{owner}.step: grads must have the structure of params; "
                         f"params {params_tree}, grads {grads_tree}")
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, p), g in zip(paths_and_leaves, jax.tree.leaves(grads)):
        if jnp.shape(p) != jnp.shape(g):  # else p - lr * g would broadcast silently
            raise ValueError(f"{owner}.step: grads must have the shapes of params; "
                             f"params{jax.tree_util.keystr(path)} is {jnp.shape(p)}, "
                             f"its grad {jnp.shape(g)}")
    if not isinstance(state, OptState):
        raise TypeError(f"{owner}.step: opt_state must be an OptState (from {owner}.init), "
                        f"got {type(state).__name__}")
    if tuple(sorted(state.hyperparams)) != hyperparam_names or set(state.slots) != set(slot_names):
        raise ValueError(f"{owner}.step: opt_state was made by another optimizer: it has "
                         f"hyperparams {sorted(state.hyperparams)} and slots "
                         f"{sorted(state.slots)}, expected {list(hyperparam_names)} and "
                         f"{sorted(slot_names)}")
    for name in slot_names:
        slot = state.slots[name]
        if jax.tree.structure(slot) != params_tree or any(
                jnp.shape(p) != jnp.shape(v) for p, v in zip(jax.tree.leaves(params),
                                                             jax.tree.leaves(slot))):
            raise ValueError(f"{owner}.step: opt_state was made for other params (another "
                             f"model): slots[{name!r}] has shapes "
                             f"{jax.tree.map(jnp.shape, slot)}, params "
                             f"{jax.tree.map(jnp.shape, params)}")


@shared
def _step(owner, update, schedule, hyperparam_names, slot_names):
    """The step shared by every optimizer with the same update rule and schedule."""

    def step(params, grads, state):
        _check_step_args(owner, hyperparam_names, slot_names, params, grads, state)
        h = state.hyperparams
        t = state.count
        lr = h["lr"] * h["decay"] ** t
        if schedule is not None:
            lr = lr * schedule(t)
        new_params, slots = update(params, grads, state.slots, h, lr, t)
        trainable = trainable_mask(params)

        def settle(new, old, moves):
            # A leaf under a State stays as it is; every dtype is kept, whatever the
            # grads' dtype (float64 grads on float32 params).
            return new.astype(old.dtype) if moves else old

        new_params = jax.tree.map(settle, new_params, params, trainable)
        slots = {name: jax.tree.map(settle, slots[name], slot, trainable)
                 for name, slot in state.slots.items()}
        return new_params, OptState(t + 1, h, slots)

    return step


def _sgd_update(momentum, nesterov):
    def update(params, grads, slots, h, lr, t):
        def direction(p, g):  # g + weight_decay * p
            return g + h["weight_decay"].astype(p.dtype) * p

        if not momentum:  # plain SGD: no velocity to keep
            return jax.tree.map(lambda p, g: p - lr.astype(p.dtype) * direction(p, g),
                                params, grads), {}

        def mu(p):
            return h["momentum"].astype(p.dtype)

        velocity = jax.tree.map(lambda p, g, v: mu(p) * v + direction(p, g),
                                params, grads, slots["velocity"])  # v = momentum v + g
        if nesterov:
            step = jax.tree.map(lambda p, g, v: direction(p, g) + mu(p) * v,
                                params, grads, velocity)
        else:
            step = velocity
        new_params = jax.tree.map(lambda p, d: p - lr.astype(p.dtype) * d, params, step)
        return new_params, {"velocity": velocity}
    return update


_SGD_UPDATES = {(m, n): _sgd_update(m, n) for m, n in ((False, False), (True, False), (True, True))}


def SGD(lr: ScalarOrSchedule, decay: float = 1.0, momentum: Optional[float] = 0.0,
        nesterov: bool = False, weight_decay: float = 0.0) -> Optimizer:
    """Stochastic gradient descent with learning-rate decay (the seed's SGD).

    With lr_t = lr * decay**t and g = grad + weight_decay * p:
    v <- momentum * v + g; p <- p - lr_t * v (Nesterov: p - lr_t * (g + momentum * v)).
    With momentum 0 this is plain p <- p - lr_t * g.

    Args:
      lr: learning rate > 0, or a schedule `t -> lr` (see `fnnet.schedules`).
      decay: per-step decay factor in (0, 1]; 1 means none.
      momentum: in [0, 1); like lr, it is data in the state, so `init` can set
        it per run. None means no momentum at all: plain SGD whose state keeps
        no velocity buffer (a params-sized array less) and no momentum to set.
      nesterov: use Nesterov momentum (needs momentum > 0).
      weight_decay: L2 coefficient >= 0.

    Example:
      >>> opt = SGD(lr=0.5, decay=0.9999)
      >>> state = opt.init(params)
      >>> params, state = opt.step(params, grads, state)
    """
    if not isinstance(nesterov, bool):
        raise TypeError(f"SGD: nesterov must be True or False, got {nesterov!r}")
    if nesterov and (momentum is None or (isinstance(momentum, (int, float)) and momentum == 0)):
        raise ValueError(f"SGD: nesterov=True needs momentum > 0, got momentum={momentum}")
    if momentum is None:
        return _optimizer("SGD", lr, {"decay": decay, "weight_decay": weight_decay}, [],
                          _SGD_UPDATES[False, False],
                          hints={"momentum": "an SGD built with momentum=None keeps no velocity: "
                                             "build it with a momentum (0 included) to set it here"})
    return _optimizer("SGD", lr, {"decay": decay, "momentum": momentum,
                                  "weight_decay": weight_decay},
                      ["velocity"], _SGD_UPDATES[True, bool(nesterov)])


def _adam_update(params, grads, slots, h, lr, t):
    b1, b2, eps = h["b1"], h["b2"], h["eps"]
    mu = jax.tree.map(lambda m, g: b1.astype(g.dtype) * m + (1 - b1).astype(g.dtype) * g,
                      slots["mu"], grads)
    nu = jax.tree.map(lambda v, g: b2.astype(g.dtype) * v + (1 - b2).astype(g.dtype) * g * g,
                      slots["nu"], grads)
    # bias corrections for step t + 1
    c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
    new_params = jax.tree.map(
        lambda p, m, v: p - (lr * (m / c1) / (jnp.sqrt(v / c2) + eps)).astype(p.dtype),
        params, mu, nu)
    return new_params, {"mu": mu, "nu": nu}


def Adam(lr: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         decay: float = 1.0) -> Optimizer:
    """Adam (Kingma & Ba) with learning-rate decay, lr_t = lr * decay**t.

    mu <- b1 mu + (1 - b1) g; nu <- b2 nu + (1 - b2) g**2;
    p <- p - lr_t * mu_hat / (sqrt(nu_hat) + eps), with bias-corrected hats.
    """
    return _optimizer("Adam", lr, {"decay": decay, "b1": b1, "b2": b2, "eps": eps},
                      ["mu", "nu"], _adam_update)
