"""Values defined by their settings: how layers, losses, optimizers and schedules print.

A built-in layer, loss or schedule is a frozen dataclass whose fields are the
settings it was built with. Equal settings make equal, equally hashed values, so
`jax.jit` (which caches programs by the value of its static arguments) and
`functools.lru_cache` share one program among every equal configuration, with no
cache of constructors. `settings_repr` makes a value print as the code that builds
it: `Linear(2, 25)`, `Dropout(0.1)`, `LossBCE(eps=1e-06)`.

**Numbers are data.** A setting that only scales the math (Dropout's rate, BatchNorm's
momentum and eps, LeakyReLU's slope, ELU's alpha) is a `number_field`. Layers are JAX
pytrees (`register_settings`): a built-in layer's number fields (and the layers it holds)
are the leaves, every other setting the tree's structure. A layer class of your own is
one leafless node, the layer itself (its settings static, as before, so its own code
may branch on them and its `__post_init__` runs once). Training passes the model to `jax.jit`
as an argument, not a static one, so a model that differs only in its numbers runs the
same program (the numbers traced), as optimizer hyperparameters do; equality and `repr`
still count every setting.
"""

import dataclasses
import functools
import hashlib
import numbers

import jax
import numpy as np

from fnnet._checks import describe as _describe


def number_field(default=dataclasses.MISSING):
    """A setting that is a number scaling the math, data under `jit` (see above)."""
    return dataclasses.field(default=default, metadata={"number": True})


class _Structure:
    """A layer's pytree structure: its class, which fields are children (numbers and
    layers) and every other field's value, compared (and hashed) as the dataclass compares
    them: fields with `compare=False` (an initializer, a dtype) are kept but not compared."""

    def __init__(self, cls, children: tuple, others: tuple, compared: tuple, numbers: tuple):
        self.cls, self.children, self.others, self.compared = cls, children, others, compared
        self.numbers = numbers  # which children are number fields (the others hold layers)
        self._key = (cls, children, compared)
        self._hash = hash(self._key)  # once: jit hashes a model's structure at every call

    def key(self):
        return self._key

    def __repr__(self) -> str:
        return f"{self.cls.__name__}({', '.join(f'{n}={show(v)}' for n, v in self.compared)})"

    def __eq__(self, other):
        return isinstance(other, _Structure) and self.key() == other.key()

    def __hash__(self):
        return self._hash


class _Whole:
    """The structure of a layer that is not a dataclass: the layer itself, no leaves."""

    def __init__(self, layer):
        self.layer = layer

    def __eq__(self, other):
        return (
            isinstance(other, _Whole) and type(self.layer) is type(other.layer) and self.layer == other.layer
        )

    def __hash__(self):
        return hash(self.layer)


def _is_child(field, value, kind) -> bool:
    """A number field, or a field holding a `kind` (a layer) or a tuple of them (Sequential,
    Residual): the pytree's children."""
    holds = isinstance(value, kind) or (
        isinstance(value, tuple) and bool(value) and all(isinstance(v, kind) for v in value)
    )
    return bool(field.metadata.get("number")) or holds


def _flatten(value, kind):
    if not (dataclasses.is_dataclass(value) and type(value).__module__.startswith("fnnet.")):
        return (), _Whole(value)  # a layer class of your own: static, whole
    children, others, compared, names, numbers = [], [], [], [], []
    for field in dataclasses.fields(value):
        setting = getattr(value, field.name)
        if _is_child(field, setting, kind):
            names.append(field.name)
            children.append(setting)
            if field.metadata.get("number"):
                numbers.append(field.name)
        else:
            others.append((field.name, setting))
            if field.compare:
                compared.append((field.name, setting))
    structure = _Structure(type(value), tuple(names), tuple(others), tuple(compared), tuple(numbers))
    return tuple(children), structure


def _unflatten(structure, children):
    if isinstance(structure, _Whole):
        return structure.layer
    value = object.__new__(structure.cls)  # no __post_init__ yet: the numbers may be traced
    for name, setting in zip(structure.children, children):
        object.__setattr__(value, name, setting)
    for name, setting in structure.others:
        object.__setattr__(value, name, setting)
    numbers = [c for name, c in zip(structure.children, children) if name in structure.numbers]
    if numbers and all(_is_plain_number(n) for n in numbers) and hasattr(value, "__post_init__"):
        value.__post_init__()  # plain numbers (a model rebuilt by jax.tree.map) are checked again
    return value


def _is_plain_number(value) -> bool:
    """A Python number or a NumPy scalar: not traced, not an array of a sweep's members."""
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, bool)


def register_settings(cls, kind) -> None:
    """Make `cls` a JAX pytree of its numbers and the `kind`s (layers) it holds (see above)."""
    jax.tree_util.register_pytree_node(cls, lambda value: _flatten(value, kind), _unflatten)


def traced(value) -> bool:
    """Whether a setting is traced (a number field inside `jit`)."""
    return isinstance(value, jax.core.Tracer)


def show(value) -> str:
    """A setting as code: a function by its qualified name, a dtype as `jnp.float32`, a
    tuple of settings as a tuple of them, a traced number as `traced`, anything else by
    its repr."""
    if traced(value):
        return "traced"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(show(v) for v in value)
        return f"({inner},)" if isinstance(value, tuple) and len(value) == 1 else f"({inner})"
    if isinstance(value, np.dtype):
        return f"jnp.{value.name}"
    if dataclasses.is_dataclass(value) or not callable(value):
        return repr(value)
    return getattr(value, "__qualname__", None) or type(value).__qualname__


def settings_repr(value) -> str:
    """`Name(a, b, c=1)`: the fields without a default positionally, the others by keyword
    where they differ from their default (fields marked `repr=False` left out); a class
    of your own that is not a dataclass by its name alone, `Name()`."""
    if not dataclasses.is_dataclass(value):
        return f"{type(value).__name__}()"
    args = []
    for field in dataclasses.fields(value):
        if not field.repr:
            continue
        setting = getattr(value, field.name)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            args.append(show(setting))
        elif field.default is dataclasses.MISSING or not _same(setting, field.default):
            args.append(f"{field.name}={show(setting)}")
    return f"{type(value).__name__}({', '.join(args)})"


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def setattr_frozen(value, **settings) -> None:
    """Set fields of a frozen dataclass from its `__post_init__` (checked, normalized
    settings: `int(n_in)` for a NumPy integer)."""
    for name, setting in settings.items():
        object.__setattr__(value, name, setting)


_LONGEST = 1000  # a setting's text past this many characters is recorded by its digest


def settings(value, depth: int = 0) -> str:
    """`value` as text, the same in every process for equal settings: a dataclass as its
    type and compared fields, a function as its module and qualified name (its code is
    not read), a `functools.partial` as its function and arguments, an object that calls
    as its class and attributes, a number as a Python float (`0`, `0.0` and
    `np.float64(0)` alike, as they compare). Runs record their model, loss and optimizer so.
    A partial's or an object's text longer than 1000 characters is its digest; past 8
    levels of nesting (an object that holds itself), a value is its type."""
    if depth > 8:
        return type(value).__qualname__
    deeper = functools.partial(settings, depth=depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(
            f"{f.name}={deeper(getattr(value, f.name))}" for f in dataclasses.fields(value) if f.compare
        )
        return f"{type(value).__qualname__}({fields})"
    if isinstance(value, (tuple, list)):
        if len(value) > 100:  # a table: by its length and the digest of its items' text
            return _short(f"({len(value)} items: {', '.join(map(repr, value))})")
        return f"({', '.join(deeper(v) for v in value)})"
    if isinstance(value, dict):
        try:
            items = sorted(value.items())
        except TypeError:  # keys of several types
            items = sorted(value.items(), key=lambda item: (type(item[0]).__name__, repr(item[0])))
        return "{" + ", ".join(f"{k!r}: {deeper(v)}" for k, v in items) + "}"
    if isinstance(value, np.dtype):
        return value.name
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return repr(value)
    if isinstance(value, (numbers.Real, np.number)) or _is_number_array(value):
        return repr(float(value))
    if isinstance(value, functools.partial):  # its function and the arguments it holds
        return _short(f"partial({deeper(value.func)}, {deeper(value.args)}, {deeper(value.keywords)})")
    name = getattr(value, "__qualname__", None)
    if callable(value) and isinstance(name, str):
        return f"{getattr(value, '__module__', None)}.{name}"
    if callable(value) and isinstance(getattr(value, "__dict__", None), dict):  # an object that calls
        return _short(f"{type(value).__module__}.{type(value).__qualname__}({deeper(vars(value))})")
    return type(value).__qualname__


def _short(text: str) -> str:
    """`text`, or past `_LONGEST` characters its digest (a schedule holding a table of a
    million numbers is not copied into every checkpoint)."""
    if len(text) <= _LONGEST:
        return text
    return f"{text[:60]}...<blake2b {hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}>"


def _is_number_array(value) -> bool:
    """A concrete 0-d array of numbers (a setting some constructors keep as it came)."""
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    return shape == () and dtype is not None and np.dtype(dtype).kind in "iuf"


def check_functions(owner: str, value, required: tuple, optional: tuple = ()) -> None:
    """Raise TypeError unless `value`'s fields `required` are functions and `optional`
    ones None or functions (a layer or loss of your own functions)."""
    for field in required + optional:
        function = getattr(value, field)
        if not (callable(function) or field in optional and function is None):
            expected = "None or a function" if field in optional else "a function"
            raise TypeError(f"{owner}: {field} must be {expected}, got {_describe(function)}")


def functions_repr(owner: str, value, required: tuple, optional: tuple = ()) -> str:
    """`Owner(f=name, ...)`: the functions by name, the optional ones when given."""
    fields = required + tuple(f for f in optional if getattr(value, f) is not None)
    return f"{owner}({', '.join(f'{f}={show(getattr(value, f))}' for f in fields)})"
