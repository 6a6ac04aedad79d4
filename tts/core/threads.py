"""``threads=``: torch's intra-op threads, and a hint after a run whose threads mostly waited for a core.

``threads=auto`` (the default) is ``OMP_NUM_THREADS`` when it is set, else the cores this process may run on
(``os.sched_getaffinity``: a SLURM allocation or ``taskset`` counts, the machine's other cores do not).

Waiting is measured, not guessed: Linux keeps, per thread, the time it ran and the time it was runnable but
waiting for a core (``/proc/self/task/*/schedstat``: run time, run delay). When the process's threads waited
for a core longer than they ran, other processes were competing for the same cores, and fewer threads run
faster (the same sweep took 16 s idle and 595 s on 2 shared cores with torch's default threads).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .validate import is_int


class ThreadsError(ValueError):
    pass


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve(value) -> int:
    """``threads``: a positive integer, or ``auto`` (OMP_NUM_THREADS if set, else :func:`available_cores`)."""
    if value in (None, "auto"):
        env = os.environ.get("OMP_NUM_THREADS", "")
        return int(env) if env.isdigit() and int(env) > 0 else available_cores()
    if not is_int(value) or value < 1:
        raise ThreadsError(f"threads must be a positive integer or auto, got {value!r}")
    return value


def apply(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@dataclasses.dataclass(frozen=True)
class SchedStat:
    """Nanoseconds the live threads of this process have run, and waited runnable for a core."""

    run_ns: int
    wait_ns: int

    def __sub__(self, other: "SchedStat") -> "SchedStat":
        return SchedStat(self.run_ns - other.run_ns, self.wait_ns - other.wait_ns)


def schedstat(task_dir: Path = Path("/proc/self/task")) -> SchedStat | None:
    """Summed over this process's threads; None where the kernel does not keep it."""
    run = wait = 0
    try:
        for task in task_dir.iterdir():
            try:
                fields = (task / "schedstat").read_text().split()
            except OSError:
                continue  # a thread that ended meanwhile
            run, wait = run + int(fields[0]), wait + int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return SchedStat(run, wait) if run > 0 else None


#: Waiting counts when the threads waited for a core longer than they ran, and for at least this long.
MIN_WAIT_S = 2.0


def wait_hint(before: SchedStat | None, after: SchedStat | None, threads: int, wall_s: float) -> str | None:
    """A line when this run's threads waited for a core longer than they ran (None otherwise, or unmeasured).
    Threads that ended during the run are not counted (their time is gone with them): an undercount."""
    if before is None or after is None:
        return None
    spent = after - before
    wait_s, run_s = spent.wait_ns / 1e9, spent.run_ns / 1e9
    if wait_s < MIN_WAIT_S or wait_s <= run_s:
        return None
    fix = (f"fewer threads run faster here: try threads=1 (this run: threads={threads})" if threads > 1
           else "other jobs hold the cores; the run is right, only slower")
    return (f"note: this run's threads waited {wait_s:.0f} s for a CPU core and ran {run_s:.0f} s "
            f"(wall {wall_s:.0f} s, {available_cores()} cores available): {fix}")
