"""recbole_unlearn: make a trained RecBole recommender forget interactions, and measure it.

>>> from recbole_unlearn import run_unlearn
>>> results = run_unlearn(model="ENMF", dataset="ml-100k", config_dict={"unlearner": "warmstart"})
"""
from recbole_unlearn import _compat  # noqa: F401  (shims first)
from recbole_unlearn.evaluator import register_recbole_metrics
from recbole_unlearn.unlearner import get_unlearner, register_unlearner, unlearner_names

register_recbole_metrics()

from recbole_unlearn.quick_start import run_unlearn  # noqa: E402

__version__ = "0.1.0"
__all__ = ["run_unlearn", "register_unlearner", "get_unlearner", "unlearner_names", "__version__"]
