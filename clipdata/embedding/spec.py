"""What an embedding run is asked to do, in one small picklable value (a worker process or a
Ray actor builds its own engine from it). Three concerns, one per group of fields: the model
(`model_spec`: model, device, dtype), the image loader (batch size, loader processes, decode
mode) and the distributor (local or Ray, and where)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import OptionError
from .engine import DEFAULT_MODEL, ModelSpec

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class EngineSpec:
    # the model
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    weights: str | None = None  # an open_clip:ARCH model's checkpoint file (or pretrained tag)
    # the loader
    batch_size: int | None = None  # images per model call; None: chosen for the machine (machine.default_batch)
    workers: int | None = None  # image decode/preprocess processes; None: chosen for the machine
    exact_preprocess: bool = False  # the model's own processor, bit for bit (default: the fast path)
    # the distributor
    backend: str = "local"  # where images are embedded: "local" or "ray"
    ray_address: str | None = None  # None: start a local Ray
    num_actors: int | None = None  # Ray actors; None: what the cluster has room for

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.device, self.dtype, self.weights)

    def check(self) -> "EngineSpec":
        if self.backend not in BACKENDS:
            raise OptionError(f"--engine {self.backend!r} is not one of {', '.join(BACKENDS)}")
        self.model_spec.check()
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionError(f"--batch-size {self.batch_size} must be at least 1")
        if self.workers is not None and self.workers < 0:
            raise OptionError(f"--workers {self.workers} must be 0 (decode in this process) or more")
        if self.num_actors is not None and self.num_actors < 1:
            raise OptionError(f"--num-actors {self.num_actors} must be at least 1")
        return self


@dataclass
class EmbedStats:
    images: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason
    sha256: dict[str, str] = field(default_factory=dict)  # path -> content hash (runs with a cache)
    failed: dict[str, str] = field(default_factory=dict)  # path -> why its task failed (distributed runs)
    measured: dict[str, object] = field(default_factory=dict)  # path -> embed_images' `measure` value
