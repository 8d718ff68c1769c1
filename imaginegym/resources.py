"""How much memory is free, and refusing work that would not fit in it before allocating any.

Torch loads only to ask a CUDA device, so the real envs can use this without it.
"""

from __future__ import annotations

import os
from typing import Any

USABLE_SHARE = 0.8  # of the free memory, one process may plan to take


def available_memory(device: Any = "cpu") -> int:
    """Bytes free for new allocations: a CUDA device's free memory, or the system's MemAvailable."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(num_envs: int, per_env: int, fixed: int = 0, *, device: Any = "cpu", what: str = "", hint: str = "") -> None:
    """Raise a ValueError naming the estimate, the limit and the most envs that fit, if ``num_envs`` do not.

    Args:
        num_envs: envs asked for.
        per_env: bytes each env takes (an estimate, measured or computed).
        fixed: bytes taken once, whatever the number of envs.
        what: what each env's memory holds, for the message.
        hint: another way out, appended to the message.
    """
    needed, free = per_env * num_envs + fixed, int(USABLE_SHARE * available_memory(device))
    if needed <= free:
        return
    fixed_text = f", {fixed / 2**30:.1f} GiB once" if fixed else ""
    raise ValueError(
        f"num_envs={num_envs} needs about {needed / 2**30:.1f} GiB on {device} ({per_env / 2**20:.2f} MiB per env{what and ' for ' + what}"
        f"{fixed_text}), more than the {free / 2**30:.1f} GiB this process may take ({USABLE_SHARE:.0%} of what is free): "
        f"use at most {max(0, (free - fixed) // per_env):,} envs{hint}"
    )
