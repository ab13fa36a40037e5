"""pcn-lightning: predictive coding networks with local learning rules on PyTorch Lightning."""

from pcn_lightning.activations import ACTIVATIONS, Activation, get_activation
from pcn_lightning.builders import NetworkSpec, build_network
from pcn_lightning.errors import ConfigError, DataNotFoundError, DivergenceError, PCNError
from pcn_lightning.inference import SettleResult, reference_step, relative_drop, settle
from pcn_lightning.network import Node, PCNetwork
from pcn_lightning.primitives import REGISTRY, Map, register
from pcn_lightning.settings import EvalInference, Inference, Learning
from pcn_lightning import checkpoints  # registers the types a checkpoint may hold (weights-only loads)
from pcn_lightning.terms import Term, TermErrors
from pcn_lightning.module import PCNModule
from pcn_lightning.twin import BackpropTwin, TemporalTwin, TransformerTwin
from pcn_lightning.data import PCNDataModule
from pcn_lightning.text import ShakespeareCharDataModule
from pcn_lightning.language import TemporalPCNModule
from pcn_lightning.transformer import TransformerPCNModule

__all__ = [
    "ACTIVATIONS", "Activation", "get_activation",
    "NetworkSpec", "build_network", "Node", "PCNetwork", "Term", "TermErrors",
    "REGISTRY", "Map", "register",
    "Inference", "EvalInference", "Learning",
    "SettleResult", "reference_step", "relative_drop", "settle",
    "ConfigError", "DataNotFoundError", "DivergenceError", "PCNError",
    "PCNModule", "BackpropTwin", "PCNDataModule", "ShakespeareCharDataModule", "TemporalPCNModule", "TemporalTwin",
    "TransformerPCNModule", "TransformerTwin",
]
