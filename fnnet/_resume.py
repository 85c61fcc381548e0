"""Resuming `fit`: what defines a run, stored in its checkpoints and compared on resume.

A run is defined by its data, its key, its batch size, the params and optimizer state it
starts from, and what its model, loss and optimizer compute. The last three are
functions; `describe` writes one as text that is the same in every process: a function
by its qualified name (and, outside fnnet, its module), the values it closes over (sizes,
rates, names, other functions and layers) and, for code outside fnnet, the numbers and
names its body uses; a bound method by its function and its object; fnnet's values (a
loss, a schedule, an optimizer's step: frozen dataclasses) by their type and compared
settings; and any other object by its type and its attributes, one level deep. Checkpoints
written before runs recorded their start described objects by type and name: theirs are
accepted as they were. A `Layer`'s `init` (how params are drawn, as in its equality) and an
`Optimizer`'s hyperparameters (described by its `step` alone) are left out: the starting
params and optimizer state are compared by their own hashes.
"""

import dataclasses
import functools
import hashlib
import types

import jax
import numpy as np

from fnnet._hosts import whole
from fnnet.checkpoint import load
from fnnet.layers import Layer
from fnnet.optim import Optimizer


class _Describer:
    """Writes values as text. A layer, optimizer, function or object inside another is
    written as a hash of its own text (computed once per object), so the text grows with the
    model, not with how often its parts are referenced, and equal parts read the same
    whether or not they are one object."""

    def __init__(self, legacy=False, earlier=False):
        self.tokens, self.alive, self.legacy = {}, [], legacy
        self.current = not (earlier or legacy)  # this version's description (see `describe`)
        self.inside_object = False  # while an object's attributes are written

    def module(self, name) -> str:
        """A module as the text names it: fnnet's own as "fnnet" alone, so moving code between
        its modules changes no run; `legacy`: by the full path the checkpoints of fnnet 0.1.0
        before its modules' renaming recorded."""
        if not (name or "").startswith("fnnet"):
            return str(name)
        return _BEFORE_RENAMING.get(name, name) if self.legacy else "fnnet"

    def __call__(self, value, top=False) -> str:
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return repr(value)
        parts = (Layer, Optimizer, types.FunctionType) + ((types.MethodType,) if self.current else ())
        if isinstance(value, parts) and not top:
            return self.token(value)
        if isinstance(value, Layer):  # as in Layer's equality: not how params are drawn
            return "Layer" + self(tuple(value[1:]))
        if isinstance(value, Optimizer):  # as its step: not the hyperparameters' defaults
            steps = (value.step, value.schedule, value.name)
            return "Optimizer" + self(
                (value.init, *steps, value.hyperparameters) if not self.current else steps
            )
        if (
            dataclasses.is_dataclass(value)
            and not isinstance(value, type)
            and _library(type(value).__module__)
        ):
            # fnnet's values (a loss, a schedule, an optimizer's step): their compared settings
            kind = f"{self.module(type(value).__module__)}.{type(value).__qualname__}"
            fields = [f for f in dataclasses.fields(value) if f.compare]
            return f"{kind}({', '.join(f'{f.name}={self(getattr(value, f.name))}' for f in fields)})"
        if isinstance(value, (tuple, list)):
            return f"{type(value).__name__}({', '.join(self(v) for v in value)})"
        if type(value) is dict:
            items = sorted((repr(k), self(v)) for k, v in value.items())
            return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
        if isinstance(value, np.dtype):
            return f"dtype({value})"
        if isinstance(value, (np.ndarray, np.generic, jax.Array)):
            array = np.asarray(value)
            if array.dtype.hasobject:  # its bytes are addresses: its items instead
                return f"array(object{list(array.shape)}, {self(array.ravel().tolist())})"
            bits = hashlib.sha256(array.tobytes()).hexdigest()[:16]
            return f"array({array.dtype}{list(array.shape)}, {bits})"
        if isinstance(value, functools.partial):
            return f"partial({self(value.func)}, {self(value.args)}, {self(value.keywords)})"
        if isinstance(value, types.FunctionType):
            return self.function(value)
        if isinstance(value, types.MethodType) and self.current:  # its function and its object
            return f"method({self(value.__func__)}, {self(value.__self__)})"
        # anything else: its type, never its repr (which may hold a memory address), and
        # an object's attributes (a callable object, a layer's settings: one level deep, so
        # what it holds, a logger or a cache, is named by its type alone), or the name of a
        # named thing (a class, a jax-wrapped function) and the function it wraps if that
        # is user code. Earlier: type and name only, as runs recorded them before.
        kind = f"{self.module(type(value).__module__)}.{type(value).__qualname__}"
        expand = self.current and not self.inside_object and not _library(type(value).__module__)
        attributes = _attributes(value) if expand else {}
        if attributes:
            if not top:
                return self.token(value)
            self.inside_object = True
            try:
                return f"{kind}({', '.join(f'{k}={self(v)}' for k, v in sorted(attributes.items()))})"
            finally:
                self.inside_object = False
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
        if not isinstance(name, str):
            return kind
        text = f"{kind}:{self.module(getattr(value, '__module__', None))}.{name}"
        wrapped = getattr(value, "__wrapped__", None)
        if self.current and wrapped is not None and not _library(getattr(wrapped, "__module__", None)):
            text += f"({self(wrapped)})"
        return text

    def token(self, value) -> str:
        """A part's text as a hash, computed once per object; "<cycle>" inside itself."""
        if id(value) not in self.tokens:
            self.tokens[id(value)] = "<cycle>"  # until its text is done
            self.alive.append(value)  # its id stays its own while we run
            text = self(value, top=True)
            self.tokens[id(value)] = "#" + hashlib.sha256(text.encode()).hexdigest()[:16]
        return self.tokens[id(value)]

    def function(self, f) -> str:
        parts = []
        for cell in f.__closure__ or ():
            try:
                parts.append(self(cell.cell_contents))
            except ValueError:  # an empty cell
                parts.append("<empty>")
        parts += [self(default) for default in f.__defaults__ or ()]
        parts += [self(item) for item in sorted((f.__kwdefaults__ or {}).items())]
        if not (f.__module__ or "").startswith("fnnet"):
            # user code: what its body uses, e.g. the 3 of `lambda x: x ** 3`
            code = f.__code__
            if self.current:
                parts.append(repr(_body(code, f.__doc__)))
            else:
                parts.append(repr([c for c in code.co_consts if isinstance(c, (int, float, complex))]))
                parts.append(repr(code.co_names))
        return f"{self.module(f.__module__)}.{f.__qualname__}({', '.join(parts)})"


def _body(code, doc=None) -> list:
    """What a body uses: its constants (numbers, strings but its docstring, tuples of them:
    `[0.5, 1.0, 2.0]` compiles to one), its names, and those of the code inside it (a
    nested lambda, a comprehension)."""
    used: list = [code.co_names]
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            used.append((c.co_name, _body(c)))
        elif isinstance(c, frozenset):  # its order varies between processes
            used.append(sorted(map(repr, c)))
        elif c is not doc and (c is None or isinstance(c, (int, float, complex, str, bytes, tuple))):
            used.append(c)
    return used


def _library(module) -> bool:
    """Whether a module is fnnet's, jax's or NumPy's: their objects and the functions they
    wrap are named, not described (`jnp.tanh`, a jax-wrapped function holding a cache,
    reads as its name, as before objects were described)."""
    return str(module or "").split(".")[0] in ("fnnet", "jax", "jaxlib", "numpy")


def _attributes(value) -> dict:
    """An object's attributes by name: its `__dict__` and `__slots__` values ({} for a
    class, a module, and objects with neither)."""
    if isinstance(value, (type, types.ModuleType)):
        return {}
    found = {}
    for cls in type(value).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for slot in [slots] if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):  # stored mangled
                slot = f"_{cls.__name__.lstrip('_')}{slot}"
            try:
                found[slot] = getattr(value, slot)
            except AttributeError:  # a slot never set
                continue
    own = getattr(value, "__dict__", None)
    if isinstance(own, dict):
        found.update(own)
    return found


# fnnet's modules renamed after checkpoints began to record runs (new name -> old name)
_BEFORE_RENAMING = {
    "fnnet.combinators": "fnnet.serial",
    "fnnet.training": "fnnet.train",
    "fnnet.fitting": "fnnet.fit",
    "fnnet.sweeps": "fnnet.sweep",
}


def describe(value, legacy=False, earlier=False) -> str:
    """A text identifying what `value` (a Layer, Loss, Optimizer, function) computes, the
    same in every process for equal constructions (`legacy`: as checkpoints written before
    fnnet's modules were renamed describe it; `earlier`: as runs were described before they
    recorded their start: objects, bound methods and jax-wrapped functions by type and name,
    a user function's body by its top-level numbers and names, an optimizer with its
    hyperparameters' defaults)."""
    return _Describer(legacy, earlier)(value, top=True)


def digest(value, legacy=False, earlier=False) -> str:
    """A short hash of `describe(value, legacy, earlier)`."""
    return hashlib.sha256(describe(value, legacy, earlier).encode()).hexdigest()[:32]


def _earlier_digests(value) -> tuple:
    """The digests runs recorded before they recorded their start: objects by type and name
    only, modules by their names before and after fnnet's modules were renamed."""
    return digest(value, earlier=True), digest(value, legacy=True)


def data_digest(*arrays) -> str:
    """A hash of arrays' shapes, dtypes and bytes (of an array spread over several
    processes, as `jax.make_array_from_process_local_data` makes, its shape and dtype
    only: every process must come to the same hash)."""
    hasher = hashlib.sha256()
    for a in arrays:
        _hash_leaf(hasher, "", a)
    return hasher.hexdigest()[:32]


def tree_digest(tree) -> str:
    """A hash of a pytree's leaves: their paths, dtypes, shapes and values (of a leaf spread
    over several processes, its values only where this process holds a whole copy: every
    process must come to the same hash)."""
    hasher = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        _hash_leaf(hasher, f"{jax.tree_util.keystr(path)}: ", leaf)
    return hasher.hexdigest()[:32]


def _hash_leaf(hasher, label: str, leaf) -> None:
    """Add `label`, the leaf's dtype and shape, and its values where this process holds
    them all (see `_hosts.whole`) to `hasher`."""
    values = whole(leaf)
    dtype, shape = (leaf.dtype, leaf.shape) if values is None else (values.dtype, values.shape)
    hasher.update(f"{label}{dtype}{list(shape)};".encode())
    if values is not None:
        hasher.update(np.ascontiguousarray(values).tobytes())


def key_spec(key) -> list:
    """A key as JSON: `[implementation, [its uint32 words]]`."""
    return [str(jax.random.key_impl(key)), np.asarray(jax.random.key_data(key)).tolist()]


def run_spec(model, loss, opt, params, opt_state, x, y, validation, batch_size, key) -> dict:
    """What defines a run, as JSON: compared by `differences` when it resumes. `params` and
    `opt_state` are those the run starts from (its hyperparameters are compared by name, from
    the checkpoint's optimizer state)."""
    return {
        "n": int(x.shape[0]),
        "batch_size": batch_size,
        "key": key_spec(key),
        "data": data_digest(x, y),
        "validation": None if validation is None else data_digest(*validation),
        "model": digest(model),
        "loss": digest(loss),
        "optimizer": digest(opt),
        "start_params": tree_digest(params),
        "start_opt_state": tree_digest(opt_state._replace(hyperparams={})),
        "start_count": int(opt_state.count),
        # x64 changes what a key draws (Dropout's masks) and the losses' dtype
        "x64": bool(jax.config.read("jax_enable_x64")),
    }


_WHAT = {  # field -> how an error names it when it differs (a start: with its verb)
    "n": "the number of samples (n)",
    "batch_size": "batch_size",
    "key": "key",
    "data": "the data (x, y)",
    "validation": "the validation data",
    "model": "the model (its layers or their settings)",
    "loss": "the loss",
    "optimizer": "the optimizer (its kind, update rule or lr schedule)",
    "start_params": "the initial params differ",
    "start_opt_state": "the initial optimizer state (its step count or buffers) differs",
    "x64": "jax_enable_x64",
}


def differences(stored: dict, current: dict, parts=None) -> list:
    """What differs between a checkpoint's run and this one, as phrases. `parts`: this
    run's `{"model": ..., "loss": ..., "optimizer": ...}`, whose digests may also match as
    a checkpoint written before fnnet's modules were renamed recorded them. A checkpoint
    written before runs recorded their starting params and optimizer state is not
    compared on those."""
    found = []
    earlier = "start_params" not in stored  # written by a version that described objects by name
    for field, what in _WHAT.items():
        was, now = stored.get(field), current[field]
        if was == now or earlier and parts and field in parts and was in _earlier_digests(parts[field]):
            continue
        if field == "validation" and (was is None) != (now is None):
            found.append(
                "validation data "
                + (
                    "given now, none in the checkpoint's run"
                    if was is None
                    else "given in the checkpoint's run, none now"
                )
            )
        elif field in ("n", "batch_size", "key") or field == "x64" and was is not None:
            found.append(f"{what} is {now} now, {was} in the checkpoint's run")
        elif field.startswith("start_"):
            if was is not None:
                found.append(f"{what} from the run's in the checkpoint")
        else:
            found.append(f"{what} differs")
    return found


def _refusal(path, why) -> ValueError:
    return ValueError(f"fit: cannot resume from {path!r}: {why}")


def resume(path, params, opt_state, spec, epochs, steps_per_epoch, parts=None):
    """`(params, opt_state, losses, val_losses, epochs_done, start_count)` from the
    checkpoint at `path`, after checking that it is this run's (`parts`: see `differences`)."""
    loaded_params, loaded_state, metadata = load(path, like=(params, opt_state))
    if not (isinstance(metadata, dict) and isinstance(metadata.get("run"), dict)):
        raise _refusal(
            path, "it holds no fit metadata (a file written by save, not by fit, or by an older fnnet)"
        )
    stored = metadata["run"]
    found = differences(stored, spec, parts) + _hyperparam_differences(loaded_state, opt_state)
    if found:
        raise _refusal(
            path,
            f"it is another run's: {'; '.join(found)}. Resume with the same "
            f"settings, or start a new checkpoint",
        )
    done, losses, val_losses = (metadata.get(k) for k in ("epochs_done", "losses", "val_losses"))
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise _refusal(path, f"corrupt metadata: epochs_done is {done!r}, not an int >= 0")
    if done > epochs:
        raise ValueError(f"fit: checkpoint {path!r} has {done} epochs done, more than epochs={epochs}")
    for name, values, length in (
        ("losses", losses, done),
        ("val_losses", val_losses, 0 if spec["validation"] is None else done),
    ):
        if not (
            isinstance(values, list)
            and len(values) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise _refusal(
                path, f"corrupt metadata: {name} must be a list of {length} numbers, got {values!r:.80}"
            )
    start_count = stored.get("start_count")
    count = getattr(loaded_state, "count", None)
    if count is not None and (
        not isinstance(start_count, int) or int(count) != start_count + done * steps_per_epoch
    ):
        raise _refusal(
            path,
            f"corrupt metadata: the optimizer took {int(count)} steps, not the "
            f"{done} epochs x {steps_per_epoch} steps the metadata says (from "
            f"step {start_count!r})",
        )
    return loaded_params, loaded_state, losses, val_losses, done, start_count


def _hyperparam_differences(stored_state, state) -> list:
    stored, given = (getattr(s, "hyperparams", {}) for s in (stored_state, state))
    return [
        f"{name} is {np.asarray(given[name])!s} now, {np.asarray(stored[name])!s} in the checkpoint's run"
        for name in sorted(stored)
        if name in given and not np.array_equal(np.asarray(stored[name]), np.asarray(given[name]))
    ]
