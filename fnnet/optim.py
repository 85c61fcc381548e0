"""Optimizers: per-leaf update rules lifted to parameter pytrees by `optimizer`.

An optimizer is a rule for one parameter leaf,

    rule(p, g, slots, h, lr, t) -> (new_p, new_slots)

with `p` and `g` a leaf and its gradient, `slots` a dict of leaf-shaped
buffers (SGD's velocity, Adam's moments), `h` the hyperparameters (scalars in
p's dtype), `lr` the learning rate of step `t` (steps already taken, from 0).
`optimizer(name, rule, lr, slots, **hyperparams)` lifts it to pytrees and
builds an `Optimizer`. Each hyperparameter carries its own check (`positive`,
`nonnegative`, `fraction`, `decay_factor`, or your own `Hyperparameter`), so a
new one needs no table.

An optimizer is a value: a frozen dataclass of the settings it was built with,
equal and equally hashed for equal settings, printed as the code that builds it
(`SGD(lr=0.5, decay=0.9995)`). Its `step` is a value too (an `OptimizerStep`),
equal for every optimizer that steps the same way (same update rule, schedule and
state layout) whatever its hyperparameters: jitted programs take `opt.step`, so a
new lr never recompiles.

Hyperparameters live in the optimizer state as arrays, so changing them never
recompiles a jitted step and `jax.vmap` over them trains a sweep:

    states = jax.vmap(lambda p, lr: opt.init(p, lr=lr))(stacked_params, lrs)

The learning rate at step t is `lr * decay**t` (for optimizers built with a
decay), times `schedule(t)` when `lr` was given as a schedule. An optimizer built
with a `clip_norm` hyperparameter (every built-in one takes `clip_norm=`) first
scales the gradients by min(1, clip_norm / norm), norm the global L2 norm of every
trainable gradient. Leaves under a `fnnet.State` (running statistics) are never
changed.
"""

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._checks import INT32_MAX, as_number, describe, is_finite, is_real
from fnnet._precision import at_least_float32, check_near_one
from fnnet._types import Array, ScalarOrSchedule
from fnnet._values import settings_repr, setattr_frozen, show
from fnnet.state import trainable_mask

__all__ = [
    "Optimizer",
    "OptState",
    "Hyperparameter",
    "optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "positive",
    "nonnegative",
    "fraction",
    "decay_factor",
]


class Optimizer:
    """The base of every optimizer: `init(params, **hyperparams) -> state` and
    `step(params, grads, state) -> (params, state)`.

    Each optimizer is a frozen dataclass of its settings (`SGD`, `Adam`, or one
    built by `optimizer`), equal to another of the same settings. Built, it has:
    `step`, an `OptimizerStep` value, equal for optimizers that step the same
    way (same update rule, schedule and state layout) whatever their
    hyperparameters, which are data in the state: compiled programs take
    `opt.step`, so equal steps share them; `schedule`, the lr schedule given to
    the constructor (None for a constant lr), which training checks over a whole
    run before starting; `name`, which names the optimizer in errors; and
    `hyperparameters`, each hyperparameter's name mapped to its default and its
    check.
    """

    name: str
    step: "OptimizerStep"
    schedule: Optional[Callable]
    hyperparameters: Dict[str, "Hyperparameter"]
    _hints: Dict[str, str]

    def _build(self, name: str, rule: Callable, lr, slots=(), hints=None, **hyperparams) -> None:
        """Check the settings and set `name`, `step`, `schedule` and `hyperparameters`.
        Settings given as NumPy or JAX scalars are kept as Python numbers (hashable, and
        never an array that a donating step could delete)."""
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            setattr_frozen(self, **{field.name: as_number(getattr(self, field.name))})
        lr = as_number(lr)
        hyperparams = {
            n: h._replace(value=as_number(h.value)) if isinstance(h, Hyperparameter) else h
            for n, h in hyperparams.items()
        }
        if len(set(slots)) != len(slots):
            raise ValueError(f"{name}: slots must be distinct names, got {list(slots)}")
        for hyper_name, hyper in hyperparams.items():
            if not isinstance(hyper, Hyperparameter):
                raise TypeError(
                    f"{name}: hyperparameter {hyper_name} must be a Hyperparameter "
                    f"(e.g. fnnet.optim.positive(value)), got {hyper!r}"
                )
        schedule: Optional[Callable] = None
        if callable(lr):
            _check_schedule(name, lr)
            schedule, lr = lr, 1.0  # the state's lr then scales the schedule
        rules = {"lr": positive(lr), **hyperparams}
        for hyper_name, hyper in rules.items():
            _check_hyperparam(name, hyper_name, hyper.value, hyper)
        step = OptimizerStep(name, rule, schedule, tuple(sorted(rules)), tuple(slots))
        setattr_frozen(
            self, name=name, step=step, schedule=schedule, hyperparameters=rules, _hints=dict(hints or {})
        )

    def init(self, params, **overrides) -> "OptState":
        """The state to start from: step count 0, the hyperparameters (the defaults, or
        `overrides` by name) as arrays in the params' float dtype, at least float32, and
        each slot zero, shaped like params, each leaf in its param's dtype, at least
        float32 (in float16 Adam's second moment of a gradient of 1e-4 is 0, of 1e4 inf;
        in bfloat16 b2 * nu rounds back to nu)."""
        name, rules = self.name, self.hyperparameters
        unknown = sorted(set(overrides) - set(rules))
        if unknown:
            why = "".join(f"; {self._hints[n]}" for n in unknown if n in self._hints)
            raise TypeError(
                f"{name}.init: unknown hyperparameter(s) {unknown}; expected some of {sorted(rules)}{why}"
            )
        _check_trainable_floats(f"{name}.init", params)
        # hyperparameters in the params' float dtype, at least float32 (float32 for
        # float32 models, even under x64)
        floats = [
            leaf for leaf in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
        ]
        dtype = at_least_float32(jnp.result_type(*floats) if floats else jnp.result_type(float))
        values = {n: overrides.get(n, hyper.value) for n, hyper in rules.items()}
        state = OptState(
            count=_array(0, jnp.int32),
            hyperparams={
                n: _array(_check_hyperparam(name, n, v, rules[n], dtype), dtype) for n, v in values.items()
            },
            slots={slot: jax.tree.map(_zero_slot, params) for slot in self.step.slot_names},
        )
        return _on_device(state)

    def valid(self, hyperparams: dict, numpy=jnp):
        """Whether every hyperparameter in `hyperparams` (a state's) is finite and keeps its
        check: elementwise, so stacked values of a sweep give one answer per member, and it
        runs on traced values (inside `vmap`); `numpy=np` runs it on the host."""
        rules = self.hyperparameters or {}
        valid = numpy.asarray(True)
        for name, value in hyperparams.items():
            if name in rules:
                valid = valid & numpy.isfinite(value) & rules[name].ok(value)
        return valid

    def __repr__(self) -> str:
        """The constructor call: `lr` and the settings that differ from their defaults."""
        args = [
            f"{field.name}={show(getattr(self, field.name))}"
            for field in dataclasses.fields(self)  # type: ignore[arg-type]
            if field.repr
            and (field.default is dataclasses.MISSING or _differs(getattr(self, field.name), field.default))
        ]
        return f"{type(self).__name__}({', '.join(args)})"


def _differs(setting, default) -> bool:
    return type(setting) is not type(default) or bool(setting != default)


class OptState(NamedTuple):
    """count: int32 steps taken; hyperparams: name -> array; slots: name -> params-like buffer."""

    count: Array  # type: ignore[assignment]  # the field shadows tuple.count, by design
    hyperparams: dict
    slots: dict


class Hyperparameter(NamedTuple):
    """A hyperparameter's default value and the rule every value of it must follow.

    `ok(values)` tests a float64 NumPy array elementwise; `expected` says in
    words what it tests, for errors ("> 0"); `near_one`: a value whose effect is 1 -
    value (a decay), which the params' dtype must keep (`_precision.check_near_one`).
    """

    value: Any
    ok: Callable[[Any], Any]
    expected: str
    near_one: bool = False


def positive(value) -> Hyperparameter:
    """A hyperparameter > 0 (a learning rate, Adam's eps)."""
    return Hyperparameter(value, _positive, "> 0")


def nonnegative(value) -> Hyperparameter:
    """A hyperparameter >= 0 (weight decay)."""
    return Hyperparameter(value, _nonnegative, ">= 0")


def fraction(value) -> Hyperparameter:
    """A hyperparameter in [0, 1) (momentum, Adam's b1 and b2, RMSProp's rho)."""
    return Hyperparameter(value, _fraction, "in [0, 1)")


def decay_factor(value) -> Hyperparameter:
    """A per-step learning-rate decay in (0, 1]; 1 means none."""
    return Hyperparameter(value, _decay_factor, "in (0, 1]", near_one=True)


def _positive(v):
    return v > 0


def _nonnegative(v):
    return v >= 0


def _fraction(v):
    return (v >= 0) & (v < 1)


def _decay_factor(v):
    return (v > 0) & (v <= 1)


def _check_hyperparam(owner: str, name: str, value, rule: Hyperparameter, dtype=None):
    """Raise unless a concrete `value` is a finite scalar number that follows `rule` (and,
    with `dtype`, still does once cast to it: 1e-50 is an lr > 0, but 0 in float32); a
    traced value (inside vmap or jit) is checked for its shape only (see `Optimizer.valid`)."""
    if isinstance(value, jax.core.Tracer):
        if jnp.shape(value) != ():
            raise ValueError(
                f"{owner}: {name} must be a scalar (one value per run; vmap over "
                f"opt.init for a sweep), got an array of shape "
                f"{jnp.shape(value)}"
            )
        return value
    # Numbers only: not bool, None or str (np.asarray("0.1", float) would read 0.1).
    if isinstance(value, int) and not isinstance(value, bool) and not is_finite(value):
        raise ValueError(f"{owner}: {name} must be {rule.expected}, got an int too large for a float")
    try:
        array = np.asarray(float(value) if isinstance(value, int) and not isinstance(value, bool) else value)
    except (TypeError, ValueError):
        array = None
    if isinstance(value, bool) or array is None or array.dtype.kind not in "iuf":
        raise TypeError(f"{owner}: {name} must be a number, got {describe(value)}")
    if array.ndim != 0:
        raise ValueError(
            f"{owner}: {name} must be a scalar (one value per run; vmap over "
            f"opt.init for a sweep), got an array of shape {array.shape}"
        )
    number = float(array)
    if not (np.isfinite(number) and rule.ok(np.float64(number))):
        raise ValueError(f"{owner}: {name} must be {rule.expected}, got {number!r}")
    if dtype is not None:
        with np.errstate(over="ignore"):  # an overflow to inf is what this looks for
            cast = np.asarray(number, dtype)
        if not (np.isfinite(cast) and rule.ok(np.float64(cast))):
            raise ValueError(
                f"{owner}: {name} must be {rule.expected} in the params' dtype "
                f"{np.dtype(dtype).name}, got {value!r}, which is {cast} there"
            )
        if rule.near_one:  # 1 - 1e-10 is no decay at all in float32, 1 - 3e-8 decays twice as fast
            check_near_one(owner, name, number, dtype)
    return value


def check_hyperparams(opt: Optimizer, owner: str, opt_state) -> None:
    """Raise ValueError if a concrete hyperparameter in `opt_state` breaks `opt`'s checks (one
    made inside `vmap`, e.g. `jax.vmap(lambda p, lr: opt.init(p, lr=lr))`, is not checked
    there: `Optimizer.valid` judges it on the device)."""
    rules = opt.hyperparameters or {}
    if isinstance(opt_state, OptState) and isinstance(opt_state.hyperparams, dict):
        for name, value in opt_state.hyperparams.items():
            if name in rules:
                _check_hyperparam(f"{owner}: opt_state", name, value, rules[name])


def _array(value, dtype):
    """`value` as an array of `dtype`: built on the host where it is concrete (`jnp.asarray`
    and `jnp.zeros` compile a small program for every new shape, a first `fit`'s fixed
    cost), traced where it is (inside `vmap`)."""
    if isinstance(value, jax.core.Tracer):
        return jnp.asarray(value, dtype)
    return np.asarray(value, dtype)


def _on_device(tree):
    """`tree` with its host arrays put on the device, in one call (one per leaf costs ~0.1 ms
    each, a tenth of a small later fit's own time); traced leaves as they are."""
    leaves, treedef = jax.tree.flatten(tree)
    at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, np.ndarray)]
    for i, leaf in zip(at, jax.device_put([leaves[i] for i in at])):
        leaves[i] = leaf
    return jax.tree.unflatten(treedef, leaves)


def _zero_slot(p):
    """A slot's zeros for param leaf `p`: in p's dtype, float32 for narrower floats."""
    dtype = jnp.result_type(p)
    dtype = at_least_float32(dtype) if jnp.issubdtype(dtype, jnp.floating) else dtype
    if isinstance(p, jax.core.Tracer):
        return jnp.zeros(jnp.shape(p), dtype)
    return np.zeros(jnp.shape(p), dtype)


def _check_trainable_floats(owner, params):
    """Raise TypeError unless every trainable leaf is a floating-point array: a step would
    cut an integer leaf's update to an integer (or fail on a Python number)."""
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), trainable in zip(paths_and_leaves, jax.tree.leaves(trainable_mask(params))):
        if trainable and not (
            hasattr(leaf, "dtype") and hasattr(leaf, "shape") and jnp.issubdtype(leaf.dtype, jnp.floating)
        ):
            what = f"dtype {leaf.dtype}" if hasattr(leaf, "dtype") else type(leaf).__name__
            raise TypeError(
                f"{owner}: params must be floating-point arrays (the optimizer "
                f"moves them), got params{jax.tree_util.keystr(path)} of {what}"
            )


def learning_rate(hyperparams: dict, schedule: Optional[Callable], t):
    """The learning rate of step `t` (a step count, or an array of them): `lr * decay**t`
    (no decay without a `decay` hyperparameter), times `schedule(t)` for a scheduled lr,
    in the hyperparameters' dtype. Every optimizer's step uses it, and so does fit's
    warning of an lr that underflows to 0."""
    lr = hyperparams["lr"] * (hyperparams["decay"] ** t if "decay" in hyperparams else 1)
    if schedule is None:
        return lr
    # A schedule gone negative (gradient ascent) gives NaN: where the counts are traced
    # (a run inside jax.vmap) the steps could not be checked before the run.
    scheduled = schedule(t)
    return lr * jnp.where(scheduled < 0, jnp.nan, scheduled)


SCHEDULE_STEPS = 2**22  # a schedule is looked at on at most the first this many steps of a run


def schedule_steps(start: int, steps: int) -> tuple:
    """`(t, steps)`: the steps from `start` a schedule is looked at on, padded to a power of
    two (at least 1024: its small programs compile once per size, not for every run
    length), and how many of them the run takes (at most `SCHEDULE_STEPS`, and within the
    int32 count: a run that stops early may be given more)."""
    steps = min(steps, SCHEDULE_STEPS, INT32_MAX - start)
    size = 1 << max(10, (steps - 1).bit_length())
    return jnp.arange(start, start + size, dtype=jnp.int32), steps


def _check_schedule(owner, schedule, steps=1, start=0):
    """Raise ValueError unless `schedule(t)` is a finite scalar > 0 for start <= t < start +
    steps (a run continued from a state takes the steps after its count), on the steps
    `schedule_steps` gives."""
    with jax.ensure_compile_time_eval():  # concrete even when called while tracing
        t, steps = schedule_steps(start, steps)
        lrs = np.asarray(schedule(t))
    if lrs.shape != t.shape:
        raise ValueError(
            f"{owner}: the lr schedule must map a step to a scalar (steps of shape "
            f"{t.shape} to lrs of shape {t.shape}), got lrs of shape {lrs.shape}"
        )
    lrs = lrs[:steps]
    bad = ~(np.isfinite(lrs) & (lrs > 0))
    if bad.any():
        first = start + int(np.argmax(bad))
        raise ValueError(
            f"{owner}: the lr schedule must give a finite lr > 0 at every step, "
            f"got {lrs[first - start]} at step {first}"
        )


def check_schedule(opt: Optimizer, steps: int, counts=0) -> None:
    """Raise ValueError if `opt`'s lr schedule (if any) is bad within the `steps` steps after
    each count in `counts` (a state's count, or a sweep's, one per member; traced counts,
    whose values are not known, from 0)."""
    if opt.schedule is None:
        return
    starts = {0} if isinstance(counts, jax.core.Tracer) else {int(c) for c in np.ravel(counts)}
    for start in sorted(starts):
        _check_schedule(opt.name, opt.schedule, steps, start)


def optimizer(
    name: str,
    rule: Callable,
    lr: ScalarOrSchedule,
    slots=(),
    *,
    hints: Optional[Dict[str, str]] = None,
    **hyperparams: Hyperparameter,
) -> Optimizer:
    """Lift a per-leaf `rule` to an `Optimizer` over parameter pytrees.

    Args:
      name: the optimizer's name, for errors.
      rule: `(p, g, slots, h, lr, t) -> (new_p, new_slots)` for one leaf (see
        the module docstring); traced once per leaf shape.
      lr: the learning rate, > 0, or a schedule `t -> lr` (then the state's
        `lr`, default 1, scales it).
      slots: names of the leaf-shaped buffers the rule keeps, zero at `init`.
      hints: hyperparameter name -> why `init` cannot set it, added to that error.
      **hyperparams: name -> `Hyperparameter` (default and check). One named
        `decay` makes the learning rate of step t `lr * decay**t`; one named
        `clip_norm` (e.g. `positive(1.0)`) scales the gradients to a global L2
        norm of at most its value before the rule sees them.

    Example (RMSProp in full):
      >>> def RMSProp(lr, rho=0.9, eps=1e-8):
      ...     def rule(p, g, slots, h, lr, t):  # ms <- rho ms + (1 - rho) g^2
      ...         ms = h["rho"] * slots["ms"] + (1 - h["rho"]) * g * g
      ...         return p - lr * g / (jnp.sqrt(ms) + h["eps"]), {"ms": ms}
      ...     return optimizer("RMSProp", rule, lr, ["ms"], rho=fraction(rho), eps=positive(eps))
    """
    if isinstance(slots, (str, bytes)) or not all(isinstance(s, str) for s in slots):
        raise TypeError(f"{name}: slots must be a list of names, such as ['ms'], got {describe(slots)}")
    numbers = tuple(
        (n, h._replace(value=as_number(h.value)) if isinstance(h, Hyperparameter) else h)
        for n, h in hyperparams.items()
    )
    return RuleOptimizer(name, rule, as_number(lr), tuple(slots), numbers, tuple((hints or {}).items()))


@dataclasses.dataclass(frozen=True, repr=False)
class RuleOptimizer(Optimizer):
    """An optimizer of your own update rule, made by `optimizer(name, rule, lr, slots,
    **hyperparams)`: `hyperparams` and `hints` are kept as `(name, value)` pairs. It
    prints as `name(lr=..., rho=...)`, with every hyperparameter's default."""

    name: str
    rule: Callable
    lr: ScalarOrSchedule
    slots: Tuple[str, ...] = ()
    hyperparams: Tuple[Tuple[str, "Hyperparameter"], ...] = ()
    hints: Tuple[Tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    def __post_init__(self):
        self._build(self.name, self.rule, self.lr, self.slots, dict(self.hints), **dict(self.hyperparams))

    def __repr__(self) -> str:
        settings = [("lr", self.lr)] + [(name, hyper.value) for name, hyper in self.hyperparams]
        return f"{self.name}({', '.join(f'{name}={show(value)}' for name, value in settings)})"


def _check_step_args(owner, hyperparam_names, slot_names, params, grads, state):
    """Trace-time checks of `step`'s arguments: grads and state must fit params."""
    params_tree, grads_tree = jax.tree.structure(params), jax.tree.structure(grads)
    if params_tree != grads_tree:
        raise ValueError(
            f"{owner}.step: grads must have the structure of params; params {params_tree}, grads {grads_tree}"
        )
    paths_and_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, p), g in zip(paths_and_leaves, jax.tree.leaves(grads)):
        if jnp.shape(p) != jnp.shape(g):  # else p - lr * g would broadcast silently
            raise ValueError(
                f"{owner}.step: grads must have the shapes of params; "
                f"params{jax.tree_util.keystr(path)} is {jnp.shape(p)}, "
                f"its grad {jnp.shape(g)}"
            )
    if not isinstance(state, OptState):
        raise TypeError(
            f"{owner}.step: opt_state must be an OptState (from {owner}.init), got {describe(state)}"
        )
    if tuple(sorted(state.hyperparams)) != hyperparam_names or set(state.slots) != set(slot_names):
        raise ValueError(
            f"{owner}.step: opt_state was made by another optimizer: it has "
            f"hyperparams {sorted(state.hyperparams)} and slots "
            f"{sorted(state.slots)}, expected {list(hyperparam_names)} and "
            f"{sorted(slot_names)}"
        )
    for name in slot_names:
        slot = state.slots[name]
        if jax.tree.structure(slot) != params_tree or any(
            jnp.shape(p) != jnp.shape(v) for p, v in zip(jax.tree.leaves(params), jax.tree.leaves(slot))
        ):
            raise ValueError(
                f"{owner}.step: opt_state was made for other params (another "
                f"model): slots[{name!r}] has shapes "
                f"{jax.tree.map(jnp.shape, slot)}, params "
                f"{jax.tree.map(jnp.shape, params)}"
            )


def _rule_output(owner, slot_names, p, output):
    """A rule's `(new_p, new_slots)`, checked while tracing: a pair, new_p shaped like
    the param, new_slots holding exactly the optimizer's slots, each shaped like it."""
    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise TypeError(f"{owner}: the update rule must return (new_p, new_slots), got {describe(output)}")
    new_p, slots = output
    if jnp.shape(new_p) != jnp.shape(p):
        raise ValueError(
            f"{owner}: the update rule returned new_p of shape {jnp.shape(new_p)} for a param "
            f"of shape {jnp.shape(p)}"
        )
    if not isinstance(slots, dict) or set(slots) != set(slot_names):
        got = sorted(slots) if isinstance(slots, dict) else describe(slots)
        raise ValueError(
            f"{owner}: the update rule must return new_slots with the slots {sorted(slot_names)}, got {got}"
        )
    for name in slot_names:
        if jnp.shape(slots[name]) != jnp.shape(p):
            raise ValueError(
                f"{owner}: the update rule returned slot {name!r} of shape "
                f"{jnp.shape(slots[name])} for a param of shape {jnp.shape(p)}"
            )
    return new_p, slots


@dataclasses.dataclass(frozen=True, repr=False)
class OptimizerStep:
    """`step(params, grads, state) -> (params, state)`: an update rule lifted to parameter
    pytrees, a value equal for every optimizer with the same name, rule, schedule and
    state layout (its hyperparameters are data in `state`), so compiled programs that
    take it are shared by all of them."""

    name: str
    rule: Callable
    schedule: Optional[Callable]
    hyperparam_names: Tuple[str, ...]
    slot_names: Tuple[str, ...]

    __name__ = "step"  # how jit names its programs: jit(step)

    def __repr__(self) -> str:
        return settings_repr(self)

    def __call__(self, params, grads, state):
        owner, schedule, slot_names = self.name, self.schedule, self.slot_names
        _check_step_args(owner, self.hyperparam_names, slot_names, params, grads, state)
        hyper, t = state.hyperparams, state.count
        lr = learning_rate(hyper, schedule, t)
        leaves, treedef = jax.tree.flatten(params)
        grad_leaves = treedef.flatten_up_to(grads)
        if "clip_norm" in hyper:
            grad_leaves = _clipped(grad_leaves, jax.tree.leaves(trainable_mask(params)), hyper["clip_norm"])
        slot_leaves = {name: treedef.flatten_up_to(state.slots[name]) for name in slot_names}
        new_leaves, new_slots = [], {name: [] for name in slot_names}
        for i, (p, g, moves) in enumerate(zip(leaves, grad_leaves, jax.tree.leaves(trainable_mask(params)))):
            slots = {name: slot_leaves[name][i] for name in slot_names}
            if moves:  # a leaf under a State stays as it is
                # The rule runs in p's dtype, at least float32 (in float16 Adam's eps 1e-8
                # is 0, in bfloat16 its b2 0.999 is 1); every dtype is kept on the way out
                # (the slots `init` makes are float32 for half-precision params).
                dtype = at_least_float32(p.dtype)
                try:
                    output = self.rule(
                        p.astype(dtype),
                        g.astype(dtype),
                        {name: s.astype(dtype) for name, s in slots.items()},
                        {name: h.astype(dtype) for name, h in hyper.items()},
                        jnp.asarray(lr, dtype),
                        t,
                    )
                except KeyError as error:
                    raise ValueError(
                        f"{owner}: the update rule reads {error}, which this optimizer does not "
                        f"have: its hyperparameters are {sorted(hyper)}, its slots "
                        f"{sorted(slot_names)}; give optimizer() the missing one "
                        f"(e.g. rho=fraction(0.9), or 'ms' in slots)"
                    ) from error
                new_p, slots = _rule_output(owner, slot_names, p, output)
                p = new_p.astype(p.dtype)
                slots = {name: slots[name].astype(slot_leaves[name][i].dtype) for name in slot_names}
            new_leaves.append(p)
            for name in slot_names:
                new_slots[name].append(slots[name])
        return (
            jax.tree.unflatten(treedef, new_leaves),
            OptState(
                t + 1, hyper, {name: jax.tree.unflatten(treedef, new_slots[name]) for name in slot_names}
            ),
        )


def _clipped(grads, moves, clip_norm):
    """The trainable `grads` scaled by min(1, clip_norm / norm), norm their global L2 norm;
    the others as they are.

    In at least float32, and in units of 2**e, the grads' largest magnitude's power of
    two: with r the norm of g / 2**e, norm > clip_norm is r > clip_norm / 2**e and a clipped
    g is (g / 2**e) * (clip_norm / r), so neither the norm (a gradient of 1e20 squared
    overflows float32) nor a factor leaves float32's normal range: 2**-e is applied as two
    factors of at most 2**64 each (1 / 1e38 alone is below float32's normal numbers, and
    XLA divides by a scalar through its reciprocal, flushed to 0)."""
    at = [i for i, m in enumerate(moves) if m]
    if not at:
        return grads
    wide = [grads[i].astype(at_least_float32(grads[i].dtype)) for i in at]
    largest = jnp.max(jnp.stack([jnp.max(jnp.abs(g), initial=0) for g in wide]))
    e = jnp.frexp(largest)[1]  # 0 for 0
    one = jnp.ones((), largest.dtype)
    down = (jnp.ldexp(one, -(e // 2)), jnp.ldexp(one, e // 2 - e))  # their product: 2**-e

    def scaled(g, factors):  # g times each factor in turn, computed where it is used
        for f in factors:
            g = g * f.astype(g.dtype)
        return g

    r = jnp.sqrt(sum(jnp.sum(jnp.square(scaled(g, down))) for g in wide))
    clip = r > jnp.ldexp(clip_norm.astype(r.dtype), -e)  # g = 0: r = 0, nothing to clip
    # a clipped g is (g / 2**e) * (clip_norm / r); the others times 1, 1 and 1: as they are
    factors = tuple(jnp.where(clip, f, one) for f in down + (clip_norm / jnp.where(clip, r, 1),))
    grads = list(grads)
    for i, g in zip(at, wide):
        grads[i] = scaled(g, factors).astype(grads[i].dtype)
    return grads


def _clip(clip_norm) -> dict:
    """The `clip_norm` hyperparameter of a built-in optimizer: none for None."""
    return {} if clip_norm is None else {"clip_norm": positive(clip_norm)}


def _plain_sgd(p, g, slots, h, lr, t):
    return p - lr * (g + h["weight_decay"] * p), slots  # p <- p - lr (g + wd p)


def _momentum_sgd(p, g, slots, h, lr, t):
    d = g + h["weight_decay"] * p
    velocity = h["momentum"] * slots["velocity"] + d  # v <- momentum v + d
    return p - lr * velocity, {"velocity": velocity}


def _nesterov_sgd(p, g, slots, h, lr, t):
    d = g + h["weight_decay"] * p
    velocity = h["momentum"] * slots["velocity"] + d
    return p - lr * (d + h["momentum"] * velocity), {"velocity": velocity}


@dataclasses.dataclass(frozen=True, repr=False)
class SGD(Optimizer):
    """Stochastic gradient descent with learning-rate decay (the report's SGD).

    With lr_t = lr * decay**t and d = grad + weight_decay * p:
    v <- momentum * v + d; p <- p - lr_t * v (Nesterov: p - lr_t * (d + momentum * v)).
    With momentum 0 this is plain p <- p - lr_t * d.

    Args:
      lr: learning rate > 0, or a schedule `t -> lr` (see `fnnet.schedules`).
      decay, momentum, nesterov, weight_decay: keyword-only (`SGD(0.1, 0.9)` is an
        error: in PyTorch that 0.9 is a momentum, here it would be a decay).
      decay: per-step decay factor in (0, 1]; 1 means none.
      momentum: in [0, 1); like lr, it is data in the state, so `init` can set
        it per run. None means no momentum at all: plain SGD whose state keeps
        no velocity buffer (a params-sized array less) and no momentum to set.
      nesterov: use Nesterov momentum (needs momentum > 0).
      weight_decay: L2 coefficient >= 0.
      clip_norm: None, or > 0: the gradients are first scaled to a global L2 norm of
        at most clip_norm (a hyperparameter, data in the state like lr).

    Example:
      >>> opt = SGD(lr=0.5, decay=0.9999)
      >>> state = opt.init(params)
      >>> params, state = opt.step(params, grads, state)
      >>> opt
      SGD(lr=0.5, decay=0.9999)
    """

    lr: ScalarOrSchedule
    _: dataclasses.KW_ONLY
    decay: float = 1.0
    momentum: Optional[float] = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    clip_norm: Optional[float] = None

    def __post_init__(self):
        lr, momentum, nesterov = self.lr, self.momentum, self.nesterov
        if not isinstance(nesterov, bool):
            raise TypeError(f"SGD: nesterov must be True or False, got {nesterov!r}")
        if nesterov and (momentum is None or (is_real(momentum) and momentum == 0)):
            raise ValueError(f"SGD: nesterov=True needs momentum > 0, got momentum={momentum}")
        decay_rule, weight_decay_rule = decay_factor(self.decay), nonnegative(self.weight_decay)
        if momentum is None:
            self._build(
                "SGD",
                _plain_sgd,
                lr,
                decay=decay_rule,
                weight_decay=weight_decay_rule,
                **_clip(self.clip_norm),
                hints={
                    "momentum": "an SGD built with momentum=None keeps no velocity: "
                    "build it with a momentum (0 included) to set it here"
                },
            )
        else:
            self._build(
                "SGD",
                _nesterov_sgd if nesterov else _momentum_sgd,
                lr,
                ["velocity"],
                momentum=fraction(momentum),
                decay=decay_rule,
                weight_decay=weight_decay_rule,
                **_clip(self.clip_norm),
            )


def _adam(p, g, slots, h, lr, t):
    mu = h["b1"] * slots["mu"] + (1 - h["b1"]) * g  # mu <- b1 mu + (1 - b1) g
    nu = h["b2"] * slots["nu"] + (1 - h["b2"]) * g * g  # nu <- b2 nu + (1 - b2) g^2
    c1, c2 = 1 - h["b1"] ** (t + 1), 1 - h["b2"] ** (t + 1)  # bias corrections for step t + 1
    # mu_hat = mu / c1, as mu * (1 / c1): XLA rewrites a division by a scalar so in one
    # program and not in another (a sweep's devices'), which would round them apart
    mu_hat, nu_hat = mu * (1 / c1), nu * (1 / c2)
    return p - lr * mu_hat / (jnp.sqrt(nu_hat) + h["eps"]), {"mu": mu, "nu": nu}


@dataclasses.dataclass(frozen=True, repr=False)
class Adam(Optimizer):
    """Adam (Kingma & Ba) with learning-rate decay, lr_t = lr * decay**t.

    mu <- b1 mu + (1 - b1) g; nu <- b2 nu + (1 - b2) g**2;
    p <- p - lr_t * mu_hat / (sqrt(nu_hat) + eps), with bias-corrected hats.
    Every argument after `lr` is keyword-only; `clip_norm` (None, or > 0) clips the
    gradients' global L2 norm first.

    Example:
      >>> Adam(3e-3, b2=0.99)
      Adam(lr=0.003, b2=0.99)
    """

    lr: ScalarOrSchedule
    _: dataclasses.KW_ONLY
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    decay: float = 1.0
    clip_norm: Optional[float] = None

    def __post_init__(self):
        _build_adam(self, "Adam", _adam)


def _build_adam(opt, name, rule, **more):
    """Build Adam or a variant of its moments (AdamW) from `opt`'s settings, plus `more`
    hyperparameters."""
    opt._build(
        name,
        rule,
        opt.lr,
        ["mu", "nu"],
        decay=decay_factor(opt.decay),
        b1=fraction(opt.b1),
        b2=fraction(opt.b2),
        eps=positive(opt.eps),
        **more,
        **_clip(opt.clip_norm),
    )


def _adamw(p, g, slots, h, lr, t):
    new_p, slots = _adam(p, g, slots, h, lr, t)
    return new_p - lr * h["weight_decay"] * p, slots  # p <- p - lr_t (adam step + wd p)


@dataclasses.dataclass(frozen=True, repr=False)
class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), lr_t = lr * decay**t.

    The Adam step, then p <- p - lr_t * weight_decay * p, with p the param before the
    step (as PyTorch's and optax's AdamW): the decay is not scaled by Adam's moments, as
    an L2 term in the gradient would be. Every argument after `lr` is keyword-only.

    Args:
      lr: learning rate > 0, or a schedule `t -> lr`.
      b1, b2: in [0, 1); eps: > 0; decay: per-step lr decay in (0, 1].
      weight_decay: >= 0 (default 0.01, PyTorch's).
      clip_norm: None, or > 0: clip the gradients' global L2 norm first.

    Example:
      >>> AdamW(1e-3, weight_decay=0.05)
      AdamW(lr=0.001, weight_decay=0.05)
    """

    lr: ScalarOrSchedule
    _: dataclasses.KW_ONLY
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    decay: float = 1.0
    clip_norm: Optional[float] = None

    def __post_init__(self):
        _build_adam(self, "AdamW", _adamw, weight_decay=nonnegative(self.weight_decay))
