"""Facts about the machine that several layers size their work by: the CPUs this process may
use, the CPU's model and instruction flags (native bfloat16), and the embedding batch size."""
from __future__ import annotations

import functools
import os
import platform

# Images per model call when --batch-size is not given. Measured on a 2-core AVX-512 CPU
# (benchmarks/README.md): 32 against 16 costs the same CPU per image on one thread and
# less on two (fewer thread hand-overs per image); it is also what most scripts use.
CPU_BATCH = 32
GPU_BATCH = 32  # not measured (no GPU was at hand): pass --batch-size to use a large GPU fully


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, as containers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags as Linux reports them (empty elsewhere)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, for the records a benchmark or a run writes."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def native_bf16() -> bool:
    """Native bfloat16 arithmetic (AVX-512 BF16 or AMX): where bfloat16 is worth choosing.
    Elsewhere torch emulates it, slower than float32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def default_batch(device: str) -> int:
    """Images per model call on this device when none is asked for."""
    return CPU_BATCH if device == "cpu" else GPU_BATCH
