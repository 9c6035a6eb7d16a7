"""Data-parallel training under ``torchrun``: which process this is, and the process group.

``torchrun --nproc-per-node N -m training train ...`` starts N copies with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set. Each copy builds the same data and model, and :func:`training.train.fit` wraps
the model in :class:`torch.nn.parallel.DistributedDataParallel`: every optimisation step takes the
same global batch in every process, each process runs its share of the rows (``rank::world``), and
the gradients are averaged (gloo on CPU, NCCL on CUDA). The loss of each share is normalised by the
whole batch's weight, so the averaged gradient is the single-process one: a run on N processes gives
the single-process result up to floating-point summation order (and dropout masks, which are drawn
per share). Only rank 0 writes files. Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here
does anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

__all__ = ["Dist", "from_env", "setup", "shutdown"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dist:
    """This process's place in the run (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` in every process (e.g. the run folder's name)."""
        if not self.enabled:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]


def from_env() -> Dist:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as set by ``torchrun``; checked."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return Dist(rank, world, local)


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when run under ``torchrun``; returns this process's device.

    CUDA: one GPU per process (``cuda:LOCAL_RANK``) and NCCL. CPU: gloo.
    """
    d = from_env()
    if not d.enabled:
        return d, device
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=backend)
    logger.info("distributed: rank %d of %d (%s, %s)", d.rank, d.world, backend, device)
    return d, device


def shutdown() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
