"""Flat settings: every field of `NetworkSpec`, `Inference` and `Learning` by its own
name (`T_infer` means `inference.T_infer`), as on the command line and in
`PCNModule.from_flat`. A module of its own above both `settings` and `builders`, so that
neither imports the other."""

from __future__ import annotations

from dataclasses import fields

from pcn_lightning.builders import NetworkSpec
from pcn_lightning.settings import EvalInference, Inference, Learning


def _aliases() -> dict[str, str]:
    table = {}
    for group, cls in (("network", NetworkSpec), ("inference", Inference), ("learning", Learning)):
        for f in fields(cls):
            table[f.name] = f"{group}.{f.name}"
    table["T_infer_eval"] = "eval_inference.T_infer"
    table["eta_infer_eval"] = "eval_inference.eta_infer"
    table["latent_init_eval"] = "eval_inference.latent_init"
    return table


def flat_aliases() -> dict[str, str]:
    """`T_infer` -> `inference.T_infer`, for every setting (names are unique)."""
    return _aliases()


def from_flat(cls, kwargs: dict):
    """cls(network=NetworkSpec(...), inference=Inference(...), ...) from flat keyword arguments."""
    makers = {"network": NetworkSpec, "inference": Inference, "learning": Learning, "eval_inference": EvalInference}
    return cls(**{k: makers[k](**v) if k in makers else v for k, v in split_flat(kwargs).items()})


def split_flat(kwargs: dict) -> dict:
    """Flat keyword arguments -> {"network": {...}, "inference": {...}, ...}; other keys kept."""
    table = flat_aliases()
    out: dict = {}
    for k, v in kwargs.items():
        if k in table:
            group, name = table[k].split(".")
            out.setdefault(group, {})[name] = v
        else:
            out[k] = v
    return out
