"""fnnet: a functional mini deep-learning library on JAX with hand-derived gradients.

Layers are `Layer(init, apply, vjp)` triples of pure functions, composed by
`serial`, trained by jitted optimizer steps; every derivative is written by
hand and tested against JAX's autodiff.
"""

from fnnet import schedules
from fnnet import data
from fnnet import sweep
from fnnet.checkpoint import load, save
from fnnet.fit import FitResult, TrainingDiverged, fit
from fnnet.grad import as_jax, value_and_grad
from fnnet.layers import (ELU, Identity, Layer, LeakyReLU, Linear, ReLU, Sigmoid, Softplus, Tanh,
                          elementwise, feature_major)
from fnnet.losses import Loss, LossBCE, LossBCEWithLogits, LossCrossEntropy, LossMSE
from fnnet.optim import SGD, Adam, Optimizer, OptState
from fnnet.serial import Sequential, serial
from fnnet.train import train, train_step

__version__ = "0.1.0"

__all__ = [
    "Layer", "Linear", "ReLU", "Tanh", "Sigmoid", "LeakyReLU", "ELU", "Softplus", "Identity",
    "elementwise", "feature_major", "serial", "Sequential",
    "Loss", "LossMSE", "LossBCE", "LossBCEWithLogits", "LossCrossEntropy",
    "value_and_grad", "as_jax",
    "Optimizer", "OptState", "SGD", "Adam", "schedules",
    "train_step", "train", "fit", "FitResult", "TrainingDiverged",
    "save", "load", "data", "sweep",
]
