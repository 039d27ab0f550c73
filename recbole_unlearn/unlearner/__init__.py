"""The shipped unlearners, registered on import (the registry itself is
:mod:`recbole_unlearn.registry`)."""
from __future__ import annotations

from recbole_unlearn.registry import get_unlearner, register_unlearner, unlearner_names

# The modules below register themselves on import; importing them here makes the registry
# complete as soon as the package is imported (no scanning, no plugins found by accident).
from recbole_unlearn.unlearner import alteraser as _alteraser  # noqa: E402,F401
from recbole_unlearn.unlearner import deltareplay as _deltareplay  # noqa: E402,F401
from recbole_unlearn.unlearner import ifru as _ifru  # noqa: E402,F401
from recbole_unlearn.unlearner import itemnewton as _itemnewton  # noqa: E402,F401
from recbole_unlearn.unlearner import receraser as _receraser, sisa as _sisa  # noqa: E402,F401
from recbole_unlearn.unlearner import retrain as _retrain  # noqa: E402,F401
from recbole_unlearn.unlearner import rowreset as _rowreset  # noqa: E402,F401
from recbole_unlearn.unlearner import unlearnrec as _unlearnrec  # noqa: E402,F401
from recbole_unlearn.unlearner import warm_start as _warm_start  # noqa: E402,F401

__all__ = ["register_unlearner", "get_unlearner", "unlearner_names"]
