"""Helpers the unit tests share."""

import torch


def rel_err(a, b):
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()
