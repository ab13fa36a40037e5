"""pcn-lightning: predictive coding networks with local learning rules on PyTorch Lightning."""

from pcn_lightning.activations import ACTIVATIONS, Activation, get_activation
from pcn_lightning.equations import (
    PredictionErrors,
    SettleResult,
    energy,
    inference_step,
    latent_gradients,
    layer_energies,
    prediction_errors,
    relative_drop,
    settle,
    weight_gradients,
)
from pcn_lightning.errors import ConfigError, DataNotFoundError, DivergenceError, PCNError
from pcn_lightning.module import PCNModule
from pcn_lightning.network import PredictiveCodingNetwork
from pcn_lightning.twin import BackpropTwin
from pcn_lightning.data import PCNDataModule

__all__ = [
    "ACTIVATIONS", "Activation", "get_activation",
    "PredictionErrors", "SettleResult", "energy", "inference_step", "latent_gradients",
    "layer_energies", "prediction_errors", "relative_drop", "settle", "weight_gradients",
    "ConfigError", "DataNotFoundError", "DivergenceError", "PCNError",
    "PCNModule", "PredictiveCodingNetwork", "BackpropTwin", "PCNDataModule",
]
