"""Several processes on ``torch.distributed``: the process group and the collectives the methods use.

A run joins a process group when it is launched by ``torchrun`` (which sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) or when ``run_unlearn.py
--nproc=N`` starts N local processes itself (RecBole's keys: ``nproc``, ``world_size``,
``offset``, ``ip``, ``port``; see :func:`spawn`).  ``backend: auto`` is nccl on CUDA and gloo on
the CPU.  With one process every function here is the identity, so a method written with them
runs unchanged alone.

Work is split by id, strided: rank r of N owns the ids r, r + N, r + 2N, ... of a table
(:func:`owned`).  RecBole numbers items and users in order of first appearance, so popularity
follows the id order; contiguous ranges would give rank 0 most of the pairs (on ml-1m 88% of
the item pairs for 50% of the items), strides give every rank about its share of both rows and
pairs.  A method computes its own rows and :func:`assemble` puts every rank's rows together on
every rank: each rank contributes its rows and zeros elsewhere and the contributions are summed,
which is exact (x + 0 = x), so the assembled tensor is the same bits everywhere and equals what
one process computes.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.distributed as dist

Tensor = torch.Tensor

def active() -> bool:
    """Whether this process belongs to a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """Rank 0: the only process that writes checkpoints, results, the audit line and the log file."""
    return rank() == 0


def launched() -> bool:
    """Whether the environment asks for a group of more than one process (torchrun, spawn)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(config) -> str:
    """The configured ``backend``; ``auto``: nccl when the run computes on CUDA, else gloo."""
    chosen = str(config["backend"] if "backend" in config and config["backend"] else "auto").lower()
    if chosen == "auto":
        device = config["device"] if "device" in config else None
        return "nccl" if isinstance(device, torch.device) and device.type == "cuda" else "gloo"
    return chosen


def setup(config) -> None:
    """Join the process group the environment describes (nothing with one process).

    Under CUDA each process computes on ``cuda:LOCAL_RANK``.
    """
    if not launched() or dist.is_initialized():
        return
    backend = backend_for(config)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, init_method="env://")


def owned(n: int) -> Tensor:
    """The ids of 0..n-1 this rank owns: r, r + N, r + 2N, ... (all of them with one process), [⌈(n−r)/N⌉]."""
    return torch.arange(rank(), n, world())


def owner_mask(ids):
    """Which of ``ids`` [k] (tensor or array) this rank owns, bool [k] (all True with one process)."""
    return ids % world() == rank()


def local_index(ids: Tensor) -> Tensor:
    """Positions of owned ``ids`` in this rank's share (``owned(n)[local_index(i)] == i``)."""
    return ids // world()


def my_share(values):
    """This rank's share of a sequence (array or tensor) dealt out as the ids are: every N-th from the r-th."""
    return values[rank()::world()]


def all_reduce(t: Tensor) -> Tensor:
    """Σ over ranks of ``t``, in place, on every rank (``t`` itself with one process)."""
    if active():
        dist.all_reduce(t)
    return t


def assemble(shape: tuple, mine: Tensor, values: Tensor) -> Tensor:
    """A [shape] tensor whose rows ``mine`` (this rank's positions) hold ``values`` and whose
    other rows hold the other ranks' values: exact (each position is one rank's value plus zeros)."""
    out = values.new_zeros(shape)
    out[mine] = values
    return all_reduce(out)


def _wire(t: Tensor) -> Tensor:
    """``t`` where the backend can send it: on this rank's CUDA device under nccl, else the CPU."""
    return t.to(torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu")


def gather_rows(t: Tensor) -> Tensor | None:
    """The whole table whose rows this rank holds as ``t`` (its owned ids, :func:`owned`), on
    rank 0's CPU (None elsewhere): row i comes from rank i mod N.  Used to save a state that is
    split by id."""
    if not active():
        return t
    sizes = [_wire(torch.zeros(1, dtype=torch.long)) for _ in range(world())]
    dist.all_gather(sizes, _wire(torch.tensor([len(t)])))
    sizes = [int(s.item()) for s in sizes]
    padded = _wire(t.new_zeros((max(sizes), *t.shape[1:])))
    padded[: len(t)] = _wire(t)
    parts = [torch.empty_like(padded) for _ in range(world())] if is_main() else None
    dist.gather(padded, parts, dst=0)
    if not is_main():
        return None
    whole = t.new_empty((sum(sizes), *t.shape[1:]), device="cpu")
    for r, (part, size) in enumerate(zip(parts, sizes)):
        whole[r::world()] = part[:size].cpu()
    return whole


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (picklable Python objects: a path, an error text)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: torch.nn.Module, src: int) -> None:
    """Rank ``src``'s parameters and buffers copied into ``module`` on every rank (same shapes)."""
    if not active():
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=src)


def on_main(fn: Callable[[], Any], error: type[Exception] = Exception) -> Any:
    """Run ``fn`` on rank 0 only; if it raises an ``error``, rank 0 re-raises it and every other
    rank raises ``error`` with its message, so no rank waits for a collective the others never
    reach.  Returns fn's value on rank 0, None elsewhere."""
    failure, value = None, None
    if is_main():
        try:
            value = fn()
        except error as e:
            failure = e
    message = broadcast_object(None if failure is None else (str(failure) or type(failure).__name__))
    if failure is not None:
        raise failure
    if message is not None:
        raise error(f"rank 0 failed: {message}") if error is Exception else error(message)
    return value


def barrier() -> None:
    if active():
        dist.barrier()


def spawn(target: Callable, nproc: int, args: tuple = (), world_size: int = -1, offset: int = 0,
          ip: str = "localhost", port: int = 5678) -> None:
    """Start ``nproc`` local processes of a group of ``world_size`` (-1: nproc), ranks
    offset..offset+nproc-1 (RecBole's keys), each calling ``target(*args)`` with the launch
    environment set; returns when all have ended (raises if one failed)."""
    import torch.multiprocessing as mp

    world_size = nproc if world_size in (-1, None) else int(world_size)
    mp.start_processes(_worker, args=(target, args, world_size, offset, ip, int(port)), nprocs=nproc,
                       join=True, start_method="spawn")


def _worker(local_rank: int, target: Callable, args: tuple, world_size: int, offset: int, ip: str, port: int):
    os.environ.update(RANK=str(offset + local_rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank),
                      MASTER_ADDR=ip, MASTER_PORT=str(port))
    target(*args)
