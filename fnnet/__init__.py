"""fnnet: a functional mini deep-learning library on JAX with hand-derived gradients.

Layers are values defined by their settings, each with pure `init`, `apply`
and `vjp` functions (`fnnet.layers` states the whole contract: training mode,
keys, state), composed by `Sequential`, trained by jitted optimizer steps; every derivative is written by
hand and tested against JAX's autodiff. The public names below come from each
module's own `__all__`.
"""

from fnnet import activations as _activations
from fnnet import checkpoint as _checkpoint
from fnnet import combinators as _combinators
from fnnet import conv as _conv
from fnnet import data, schedules
from fnnet import dropout as _dropout
from fnnet import fitting as _fitting
from fnnet import grad as _grad
from fnnet import layers as _layers
from fnnet import losses as _losses
from fnnet import metrics as _metrics
from fnnet import norm as _norm
from fnnet import optim as _optim
from fnnet import pool as _pool
from fnnet import state as _state
from fnnet import stopping as _stopping
from fnnet import sweeps as _sweeps
from fnnet import testing as _testing
from fnnet import training as _training
from fnnet.activations import *  # noqa: F401,F403
from fnnet.checkpoint import *  # noqa: F401,F403
from fnnet.combinators import *  # noqa: F401,F403
from fnnet.conv import *  # noqa: F401,F403
from fnnet.dropout import *  # noqa: F401,F403
from fnnet.fitting import *  # noqa: F401,F403
from fnnet.grad import *  # noqa: F401,F403
from fnnet.layers import *  # noqa: F401,F403
from fnnet.losses import *  # noqa: F401,F403
from fnnet.metrics import *  # noqa: F401,F403
from fnnet.norm import *  # noqa: F401,F403
from fnnet.optim import *  # noqa: F401,F403
from fnnet.pool import *  # noqa: F401,F403
from fnnet.state import State, trainable_mask, update_state
from fnnet.stopping import *  # noqa: F401,F403
from fnnet.sweeps import *  # noqa: F401,F403
from fnnet.testing import *  # noqa: F401,F403
from fnnet.training import *  # noqa: F401,F403

__version__ = "0.1.0"

__all__ = [
    name
    for module in (
        _layers,
        _activations,
        _norm,
        _dropout,
        _conv,
        _pool,
        _combinators,
        _losses,
        _metrics,
        _stopping,
        _grad,
        _optim,
        _training,
        _fitting,
        _sweeps,
        _checkpoint,
        _testing,
    )
    for name in module.__all__
] + ["State", "trainable_mask", "update_state", "schedules", "data"]
del (
    _activations,
    _checkpoint,
    _combinators,
    _conv,
    _dropout,
    _fitting,
    _grad,
    _layers,
    _losses,
    _metrics,
    _norm,
)
del _optim, _pool, _state, _stopping, _sweeps, _testing, _training
