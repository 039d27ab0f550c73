"""recbole_unlearn: make a trained RecBole recommender forget interactions, and measure it.

>>> from recbole_unlearn import run_unlearn
>>> results = run_unlearn(model="ENMF", dataset="ml-100k", config_dict={"unlearner": "warmstart"})

Importing the package (or any of its modules) loads only what that module needs: the pipeline
and the shipped unlearners load on first use of the names below, and RecBole's metric table
gains ``RBO`` when a plugin ``Config`` is built, not on import.
"""
from recbole_unlearn import _compat  # noqa: F401  (shims first)

__version__ = "0.1.0"
__all__ = ["run_unlearn", "UnlearnSession", "register_unlearner", "get_unlearner", "unlearner_names", "__version__"]


def __getattr__(name: str):
    if name in ("run_unlearn", "UnlearnSession"):
        from recbole_unlearn import session

        return getattr(session, name)
    if name in ("register_unlearner", "get_unlearner", "unlearner_names"):
        from recbole_unlearn import unlearner

        return getattr(unlearner, name)
    raise AttributeError(f"module 'recbole_unlearn' has no attribute {name!r}")
