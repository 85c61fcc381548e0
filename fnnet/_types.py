"""Type aliases shared by fnnet's modules."""

from typing import Any, Callable, Tuple, Union

import jax

Array = jax.Array
Params = Any  # a pytree of arrays
Grads = Any  # a pytree with the structure of Params
Shape = Tuple[int, ...]
PRNGKey = jax.Array
Schedule = Callable[[Array], Array]  # step count -> learning rate
ScalarOrSchedule = Union[float, Array, Schedule]
