"""Sharding one study's prompts across processes that write one run folder.

Two sources of a process's share, combined: the ranks of a distributed launcher (``torchrun`` and
``accelerate launch`` set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; PyTorch, "torchrun (Elastic
Launch)") and ``shard.index`` / ``shard.count`` in the config, for jobs of any Hydra launcher (submitit
on SLURM, Ray, or separate commands). Job ``i`` of ``n`` run with ``N`` ranks each gives rank ``r`` the
share ``i * N + r`` of ``n * N``. Prompt ``k`` of the study belongs to share ``k % count``, so every
share gets every category of a sorted prompt file.

Ranks of one launch must agree on the run folder Hydra names from the clock and a random suffix:
rank 0's pair is shared through the launcher's own key-value store (``torch.distributed.rendezvous``
with ``env://``; under torchrun, the agent's store), so every rank resolves the same folder, and a
restarted worker of the same launch gets the same folder back (it resumes).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

from ..core.validate import is_int

log = logging.getLogger(__name__)

#: Environment variables every rank of torchrun / accelerate launch has.
RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_STORE_KEY = "tts/launch"
_AGREED_KEY = "tts/launch-agreed"
_KEEP: list = []  # the rendezvous store, kept alive for the process's lifetime (rank 0 may host it)


class ShardError(ValueError):
    """Sharding settings tts cannot use (the message names the fix)."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's share of a study: prompts ``k`` with ``k % count == index``."""

    index: int = 0
    count: int = 1
    #: the GPU index on this node (LOCAL_RANK) when launched by torchrun / accelerate
    local_rank: int | None = None

    def owns(self, prompt_index: int) -> bool:
        return prompt_index % self.count == self.index

    def size(self, prompts: int) -> int:
        """How many of ``prompts`` prompts this share holds."""
        return len(range(self.index, prompts, self.count))

    @property
    def label(self) -> str:
        return f"shard {self.index + 1} of {self.count}"

    @property
    def tag(self) -> str:
        """A file-name suffix that tells shards apart ('' for a single process)."""
        return f".shard-{self.index}-of-{self.count}" if self.count > 1 else ""


def launcher_rank(env=None) -> tuple[int, int, int | None] | None:
    """``(rank, world size, local rank)`` set by torchrun / accelerate launch, None outside such a launch."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    try:
        rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
        local = int(env["LOCAL_RANK"]) if env.get("LOCAL_RANK", "") != "" else None
    except ValueError:
        raise ShardError(f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK="
                         f"{env.get('LOCAL_RANK')!r} are not integers: launch with torchrun or accelerate launch, "
                         "or unset them") from None
    if world < 1 or not 0 <= rank < world:
        raise ShardError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world}): launch with torchrun or "
                         "accelerate launch, or unset RANK and WORLD_SIZE")
    return rank, world, local


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():  # from ${oc.env:SLURM_PROCID}
        value = int(value)
    if not is_int(value) or value < minimum:
        raise ShardError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def resolve(index=0, count=1, env=None) -> Shard:
    """This process's share: the config's ``shard.index`` / ``shard.count`` refined by the launcher's rank."""
    count = _int("shard.count", count, 1)
    index = _int("shard.index", index, 0)
    if index >= count:
        raise ShardError(f"shard.index={index} must be below shard.count={count} (shards are numbered 0..{count - 1})")
    rank = launcher_rank(env)
    if rank is None:
        return Shard(index, count)
    r, world, local = rank
    return Shard(index * world + r, count * world, local)


def from_config(cfg) -> Shard:
    node = cfg.get("shard") or {}
    return resolve(node.get("index", 0), node.get("count", 1))


def agree_on_launch(uid: str, start: float, env=None) -> tuple[str, float]:
    """The (run suffix, start time) of rank 0 of this launch, so every rank names the same run folder.

    Outside a multi-rank launch, the arguments come back unchanged. Inside one, the first rank to
    reach the launcher's key-value store sets the pair, every rank reads it, and no rank leaves before
    all have read it (rank 0 may host the store)."""
    env = os.environ if env is None else env
    rank = launcher_rank(env)
    if rank is None or rank[1] == 1:
        return uid, start
    if not env.get("MASTER_ADDR") or not env.get("MASTER_PORT"):
        raise ShardError("RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not, so the ranks cannot agree "
                         "on a run folder: launch with torchrun or accelerate launch, or pass the same "
                         "hydra.run.dir=DIR to every rank")
    import datetime

    import torch.distributed as dist

    store, _, world = next(dist.rendezvous("env://", timeout=datetime.timedelta(minutes=10)))
    _KEEP.append(store)
    agreed = store.compare_set(_STORE_KEY, "", f"{uid} {start!r}").decode()
    store.add(_AGREED_KEY, 1)
    deadline = time.monotonic() + 600
    while store.add(_AGREED_KEY, 0) < world and time.monotonic() < deadline:
        time.sleep(0.05)
    agreed_uid, _, agreed_start = agreed.partition(" ")
    return agreed_uid, float(agreed_start)


def device_for_rank(device: str, local_rank: int | None) -> str:
    """``auto`` on a multi-GPU node under torchrun: this rank's GPU (``cuda:LOCAL_RANK``, modulo the GPUs it
    sees), made the current device too, so components that say ``cuda`` land there. Otherwise unchanged."""
    if device != "auto" or local_rank is None:
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return f"cuda:{index}"
