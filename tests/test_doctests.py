"""Every docstring example in fnnet runs, in a namespace with fnnet's public names and a small
model, its params and data (what the examples call `model`, `params`, `x`, `y`, ...)."""

import doctest
import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet

MODULES = sorted(
    path.stem for path in pathlib.Path(fnnet.__file__).parent.glob("*.py") if not path.stem.startswith("_")
)


def namespace():
    x, y = fnnet.data.disk(jax.random.key(1), 64)
    model = fnnet.serial(fnnet.Linear(2, 25), fnnet.ReLU(), fnnet.Linear(25, 1), fnnet.Sigmoid())
    params = model.init(jax.random.key(0), x.shape)[1]
    loss, opt = fnnet.LossBCE(), fnnet.SGD(lr=0.1)
    _, grads = fnnet.value_and_grad(model, loss)(params, x, y)
    return {
        **{name: getattr(fnnet, name) for name in fnnet.__all__},
        "fnnet": fnnet,
        "jax": jax,
        "jnp": jnp,
        "np": np,
        "x": x,
        "y": y,
        "model": model,
        "params": params,
        "loss": loss,
        "opt": opt,
        "grads": grads,
    }


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"fnnet.{name}")
    # The module's own names first (`init_many` in sweeps, `disk` in data), then the context.
    globs = {**namespace(), **{k: v for k, v in vars(module).items() if not k.startswith("__")}}
    tests = doctest.DocTestFinder().find(module, f"fnnet.{name}", globs=globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in fnnet.{name}"


def test_the_examples_are_found():
    found = sum(
        len(
            [
                t
                for t in doctest.DocTestFinder().find(importlib.import_module(f"fnnet.{name}"), name)
                if t.examples
            ]
        )
        for name in MODULES
    )
    assert found >= 20, found
