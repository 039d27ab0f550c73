"""Models with the class names RecBole uses, so its loaders and defaults apply by name."""
from __future__ import annotations

from recbole_unlearn.model.bpr import BPR
from recbole_unlearn.model.enmf import ENMF
from recbole_unlearn.model.lightgcn import LightGCN

MODELS = {cls.__name__.lower(): cls for cls in (ENMF, LightGCN, BPR)}


def get_model_class(name: str):
    """The plugin's model class called ``name`` (case-insensitive), or None."""
    return MODELS.get(str(name).lower())


__all__ = ["BPR", "ENMF", "LightGCN", "get_model_class", "MODELS"]
