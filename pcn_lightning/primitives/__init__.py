"""Layer primitives: maps with hand-written prediction, transpose and Hebbian
weight gradient (see `base`). Importing this package registers them all."""

from pcn_lightning.primitives.base import REGISTRY, Map, build_map, register
from pcn_lightning.primitives.act import Act
from pcn_lightning.primitives.attention import CausalSelfAttention
from pcn_lightning.primitives.conv import Conv2d
from pcn_lightning.primitives.dense import Dense
from pcn_lightning.primitives.dropout import Dropout, dropout_masks
from pcn_lightning.primitives.flatten import Flatten
from pcn_lightning.primitives.pool import AvgPool2d, MaxPool2d
from pcn_lightning.primitives.scale import Scale
from pcn_lightning.primitives.sequence import Position, RMSNorm, TokenDense
from pcn_lightning.primitives.sequential import Sequential
from pcn_lightning.primitives.skip import Residual
from pcn_lightning.primitives.transformer import TransformerBlock

__all__ = ["REGISTRY", "Map", "build_map", "register", "Act", "CausalSelfAttention", "AvgPool2d", "Conv2d", "Dense", "Dropout", "dropout_masks", "Flatten", "MaxPool2d",
           "Position", "RMSNorm", "Residual", "Scale", "Sequential", "TokenDense", "TransformerBlock"]
