"""Version shims, each tied to the release that needs it.

Nothing else in the package may branch on library versions; add a shim here instead.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

RECBOLE_VERSION = "1.2.1"

# numpy >= 2.0 removed ``np.float_`` which RecBole 1.2.1's ``Config.compatibility_settings``
# reads.  setup.cfg pins numpy < 2; the alias keeps an accidental numpy 2 from failing at
# ``Config()`` with an AttributeError far from the cause.
if not hasattr(np, "float_"):  # numpy >= 2.0
    np.float_ = np.float64  # type: ignore[attr-defined]


def prepare_trainer_dir(config) -> None:
    """Create ``config["checkpoint_dir"]`` before a RecBole ``Trainer`` is built.

    RecBole 1.2.1's ``Trainer.__init__`` creates it with ``utils.ensure_dir``: a check, then
    ``os.makedirs``.  The processes of a group that start together race between the two, and
    the one that loses fails with FileExistsError.  ``exist_ok`` makes the creation idempotent.
    """
    os.makedirs(config["checkpoint_dir"], exist_ok=True)


def load_stock_recbole_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by RecBole's own ``Trainer._save_checkpoint``.

    RecBole 1.2.1 pickles its ``Config`` object inside the file.  torch >= 2.6 defaults to
    ``weights_only=True`` and refuses it, so the only way to read it is a full unpickle, which
    can run arbitrary code: callers must have an explicit opt-in from the user
    (``allow_pickle_checkpoint: True``) before calling this.
    """
    return torch.load(path, map_location=map_location, weights_only=False)


def torch_load_safe(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers (never runs pickled code)."""
    return torch.load(path, map_location=map_location, weights_only=True)


# scipy >= 1.13 removed ``dok_matrix._update``, which RecBole 1.2.1's own LightGCN calls to build
# its normalised adjacency.  Only stock RecBole models need it (checkpoint conversion checks
# that a converted model scores exactly as RecBole's); the plugin's models never call it.
import scipy.sparse as _sp  # noqa: E402

if not hasattr(_sp.dok_matrix, "_update"):  # scipy >= 1.13
    def _dok_update(self, data: dict) -> None:
        self._dict.update(data)

    _sp.dok_matrix._update = _dok_update  # type: ignore[attr-defined]


# Warnings that third-party code emits on every normal run, silenced here and only here:
# - RecBole 1.2.1's Dataset fills missing values with a chained inplace ``fillna``, which
#   pandas >= 2.2 announces it will stop supporting (FutureWarning, dataset.py);
# - RecBole 1.2.1's Trainer builds ``torch.cuda.amp.GradScaler``, deprecated in torch >= 2.4;
# - torch's "sparse CSR tensor support is in beta state" notice for the CSR products the
#   plugin uses (``torch.sparse_csr_tensor``).
warnings.filterwarnings("ignore", message="A value is trying to be set on a copy of a DataFrame", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)


def configured_device(config: dict) -> torch.device:
    """The device a run uses: CUDA when ``use_gpu`` is on and CUDA is available, else the CPU.

    RecBole 1.2.1's ``Config._init_device`` picks CUDA whenever it is available (and ``gpu_id``
    names a device) and ignores ``use_gpu``, which only its Trainer reads; so ``use_gpu: False``
    alone would still put the model on a GPU.
    """
    chosen = config.get("device")
    if not config.get("use_gpu", True) or not torch.cuda.is_available():
        return torch.device("cpu")
    return chosen if isinstance(chosen, torch.device) else torch.device("cuda")


def data_parallel_model(model: torch.nn.Module) -> torch.nn.Module:
    """The DistributedDataParallel wrapper RecBole 1.2.1's ``AbstractTrainer`` builds when
    ``single_spec`` is off, for a model on any device.

    RecBole 1.2.1 passes ``device_ids=[local_rank]``, which torch accepts only for a module on
    one GPU; a CPU module (gloo) needs ``device_ids=None``.
    """
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
