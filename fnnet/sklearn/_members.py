"""Many stochastic fits as one compiled program: the members of a search (candidates x
folds) that share an architecture.

Each member is a `Plan` (`_training`), the run its estimator's `fit` would train; the
members of a group run in one program of fnnet's compiled loop (`fnnet.training`),
one after another on a CPU (`lax.map`: a member stopped early skips its epochs), as one
`vmap` elsewhere. Everything that differs between members is data: the initial params,
the optimizer's hyperparameters (its state), the key, the epochs (`active`), the
stopping rule's patience and min_delta (the `Watch`), a layer's numbers (a Dropout
rate) and the samples. A member's samples are its own rows of the group's data (the
distinct training sets, each stored once), gathered in the program by index: its first
n rows are its training set in order, the rest weigh 0, so its minibatches are those of
its fit alone (fnnet draws a shuffle's bits per position, the same for the first n
positions of any length), and so are its results, up to float rounding.

`fnnet.sweep` is not used: its run (`fnnet.train`) takes the stopping rule's numbers and
the epochs from its settings, so members differing in `tol`, `n_iter_no_change` or
`max_iter` would each compile a program, and a member's samples would be a mask over
one shared data set, whose shuffles differ from the fold's fit alone.
"""

import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fnnet._buckets import run_size
from fnnet._checks import INT32_MAX
from fnnet._precision import at_least_float32
from fnnet._setup import check_one_sample_steps, check_sample_weight, check_targets_of, traced_apply
from fnnet.fitting import _CHUNK
from fnnet.stopping import EarlyStopping, Watch
from fnnet._loop import Watching, _run
from fnnet.sklearn._training import Plan, Trained

__all__ = ["batchable", "check", "group_key", "Program"]

_NEVER = INT32_MAX  # the patience of a member without a stopping rule
_STOPPING = EarlyStopping("loss", "min", restore_best=False)  # scikit-learn's rule, its numbers data


def batchable(plan: Plan) -> bool:
    """Whether `plan` trains as one run from a fresh state (no validation split, one rate)."""
    stopping = plan.stopping
    fresh = plan.opt_state is None and plan.validation is None and not plan.adaptive and plan.shuffle
    return fresh and (stopping is None or (stopping.monitor, stopping.mode) == ("loss", "min"))


def check(plan: Plan) -> None:
    """Raise what `fnnet.fit` raises for `plan` before it trains and the estimator's own
    preparation does not: targets outside the loss's domain (Poisson's y < 0), sample
    weights it refuses, a step of one sample for a layer that needs two (BatchNorm). A
    member that fails here is left to its own fit, so the search reports the same error."""
    n = plan.x.shape[0]
    out = traced_apply.eval_shape(
        plan.model, plan.params, jax.ShapeDtypeStruct((1,) + plan.x.shape[1:], plan.x.dtype)
    )
    check_targets_of("fit", plan.loss, "y", plan.y, out.shape[-1])
    weights = check_sample_weight("fit", plan.sample_weight, n)
    counted = n if weights is None else int(np.count_nonzero(weights))
    check_one_sample_steps("fit", plan.model, plan.params, plan.x, plan.batch_size, plan.key, None, counted)


def _shapes(tree) -> tuple:
    leaves, structure = jax.tree.flatten(tree)
    return structure, tuple((np.shape(a), np.asarray(a).dtype.str) for a in leaves)


def group_key(plan: Plan) -> tuple:
    """What the members of one program share: the model's structure, the loss, the
    optimizer's step rule, the batch size, and the shapes of params, state and samples."""
    opt = plan.make_opt(plan.lr)
    return (
        jax.tree.structure(plan.model),
        plan.loss,
        opt.step,
        plan.batch_size,
        _shapes(plan.params),
        _shapes(opt.init(plan.params)),
        plan.x.shape[1:],
        plan.x.dtype.str,
        plan.y.shape[1:],
        plan.y.dtype.str,
    )


def _member(
    loss, step_rule, batch_size, count, x_all, model, idx, y, weights, params, state, key, active, watch
):
    return _run(
        mesh=None,
        model=model,
        loss=loss,
        step_rule=step_rule,
        batch_size=batch_size,
        shuffle=True,  # scikit-learn's shuffle=False is fit's own path (it is not batched)
        count=count,
        watching=Watching((), _STOPPING),
        params=params,
        state=state,
        data=(jnp.take(x_all, idx, axis=0), y, weights),
        key=key,
        validation=None,
        active=active,
        watch=watch,
        centers=None,
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _members(loss, step_rule, batch_size, count, one_by_one, x_all, members):
    """Every member's `Run` of `count` epochs' loop, stacked; `members` holds each
    member's model, indices, targets, weights, params, state, key, active and watch."""
    one = functools.partial(_member, loss, step_rule, batch_size, count, x_all)
    if one_by_one:
        return lax.map(lambda m: one(*m), members)
    return jax.vmap(one)(*members)


def _stack(trees):
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(a) for a in leaves]), *trees)


def _padded(a, size):
    return np.concatenate([a, np.broadcast_to(a[:1], (size - a.shape[0],) + a.shape[1:])])


def _digest(x) -> tuple:
    x = np.ascontiguousarray(x)
    return x.shape, x.dtype.str, hashlib.blake2b(x.tobytes(), digest_size=16).digest()


def _index(plans: List[Plan], offsets: dict, size: int):
    """Each member's indices into the program's data, targets and weights, `size` rows
    each: its n samples first, then rows of weight 0."""
    dtype = at_least_float32(plans[0].x.dtype)
    idx, targets, weights = [], [], []
    for plan in plans:
        n, offset = plan.x.shape[0], offsets[_digest(plan.x)]
        rows = np.arange(size)
        idx.append(offset + np.where(rows < n, rows, 0))  # padded by the first sample, as fit pads
        targets.append(_padded(plan.y, size))
        w = np.zeros(size, dtype)
        w[:n] = 1 if plan.sample_weight is None else np.asarray(plan.sample_weight, dtype)
        weights.append(w)
    return np.stack(idx).astype(np.int32), np.stack(targets), np.stack(weights)


def _stacked(plans: List[Plan], offsets: dict, size: int):
    """The members' program arguments, stacked: models, indices, targets, weights, params,
    optimizer states, keys; and their epochs and starting watches."""
    dtype = jnp.result_type(float)
    idx, y, weights = _index(plans, offsets, size)
    params = _stack([plan.params for plan in plans])
    state = _stack([plan.make_opt(plan.lr).init(plan.params) for plan in plans])
    keys = jax.random.wrap_key_data(jnp.stack([jax.random.key_data(p.key) for p in plans]))
    models = jax.tree.map(lambda *numbers: np.asarray(numbers, dtype), *[plan.model for plan in plans])
    stopping = [plan.stopping for plan in plans]
    m = len(plans)
    fields: Any = (
        np.zeros(m, np.int32),
        np.full(m, np.inf, dtype),
        np.zeros(m, np.int32),
        np.zeros(m, np.int32),
        np.zeros(m, bool),
        None,
        np.array([_NEVER if s is None else s.patience for s in stopping], np.int32),
        np.array([0.0 if s is None else s.min_delta for s in stopping], dtype),
    )
    watch = Watch(*fields)
    epochs = np.array([plan.epochs for plan in plans])
    return [models, idx, y, weights, params, state, keys], epochs, watch


def _trained(program, members, epochs, watch):
    """Run `program(members + [active, watch])` a chunk of `fnnet.fit`'s loop at a time until
    every member has run its epochs or stopped. Returns the final params, states and watch
    (NumPy), each member's losses and whether it stayed finite."""
    losses: List[list] = [[] for _ in epochs]
    finite = np.ones(len(epochs), bool)
    done = np.zeros(len(epochs), np.int64)
    while True:
        active = np.where(np.asarray(watch.stopped), 0, np.clip(epochs - done, 0, _CHUNK)).astype(np.int32)
        if not active.any():
            break
        run = program(tuple(members) + (active, watch))
        members[4], members[5], watch = run.params, run.opt_state, run.watch
        ran = np.asarray(watch.epoch) - done
        chunk = np.asarray(run.losses)
        run_finite = np.asarray(run.finite)
        for m in range(len(epochs)):
            finite[m] &= bool(run_finite[m]) and bool(np.all(np.isfinite(chunk[m, : ran[m]])))
            losses[m] += chunk[m, : ran[m]].tolist()
        done = np.asarray(watch.epoch).astype(np.int64)
    params, state, watch = jax.device_get((members[4], members[5], watch))
    return params, state, watch, losses, finite


class Program:
    """One group's compiled program and data: the distinct training sets (the members'
    and `extra`'s, each stored once), every member's rows padded to one size, and the
    members split in `jobs` shares (on a CPU, threads that run the program at once, each
    on a core of its own). `train(plans)` trains any plans of the group whose samples
    are among them (a refit on `extra`) with no new compilation.

    Args:
      plans: the members (one `group_key`, each `batchable`), at least one.
      jobs: the threads on a CPU (elsewhere one vmapped call runs every member).
      extra: arrays of samples to hold besides the members' (`(n, features)`).
    """

    def __init__(self, plans: List[Plan], jobs: int = 1, extra=()):
        first = plans[0]
        self.one_by_one = jax.default_backend() == "cpu"
        self.jobs = max(1, min(jobs, len(plans))) if self.one_by_one else 1
        self.share = -(-len(plans) // self.jobs)
        self.offsets: dict = {}
        blocks: list = []
        for x in [plan.x for plan in plans] + [np.asarray(x, first.x.dtype) for x in extra]:
            digest = _digest(x)
            if digest not in self.offsets:
                self.offsets[digest] = sum(b.shape[0] for b in blocks)
                blocks.append(np.ascontiguousarray(x))
        self.x_all = np.concatenate(blocks)
        self.size = run_size(max(b.shape[0] for b in blocks), first.batch_size)
        self.static = (first.loss, first.make_opt(first.lr).step, first.batch_size)
        self.inert = first._replace(epochs=0)  # a member that runs no epoch, for padding
        self.compiled = None

    def holds(self, plan: Plan) -> bool:
        """Whether `plan`'s samples are in the program's data."""
        return _digest(plan.x) in self.offsets and plan.x.shape[0] <= self.size

    def _program(self, args, compile_only=False):
        if not self.one_by_one:  # a vmapped loop runs every epoch of its length
            return (
                None
                if compile_only
                else _members(*self.static, int(np.max(args[-2])), False, self.x_all, args)
            )
        if self.compiled is None:  # one loop of _CHUNK epochs, as fit's chunks
            self.compiled = _members.lower(*self.static, _CHUNK, True, self.x_all, args).compile()
        return None if compile_only else self.compiled(self.x_all, args)

    def train(self, plans: List[Plan]) -> List[Optional[Trained]]:
        """Each plan's `Trained`, as `train_epochs` would return it, or None for a member
        whose run went non-finite (its own fit raises; train it alone for the message)."""
        parts = -(-len(plans) // self.share)
        order = [m for j in range(parts) for m in range(j, len(plans), parts)]
        padded = [plans[m] for m in order] + [self.inert] * (self.share * parts - len(plans))
        members, epochs, watch = _stacked(padded, self.offsets, self.size)
        shares = [
            jax.tree.map(lambda a: a[j * self.share : (j + 1) * self.share], (members, epochs, watch))
            for j in range(parts)
        ]
        if parts == 1:
            results = [_trained(self._program, *shares[0])]
        else:
            members, epochs, watch = shares[0]
            self._program(tuple(members) + (epochs.astype(np.int32), watch), compile_only=True)
            with ThreadPoolExecutor(parts) as pool:
                results = list(pool.map(lambda part: _trained(self._program, *part), shares))
        out: List[Optional[Trained]] = [None] * len(plans)
        for position, m in enumerate(order):
            params, state, watch, losses, finite = results[position // self.share]
            k = position % self.share
            if finite[k]:
                plan = plans[m]
                member = jax.tree.map(lambda a: a[k], (params, state))
                stopped = plan.stopping is not None and bool(watch.stopped[k])
                best = None if plan.stopping is None else int(watch.best_epoch[k])
                losses_k = np.asarray(losses[k], np.float64)
                out[m] = Trained(member[0], member[1], losses_k, None, stopped, plan.lr, best)
        return out
