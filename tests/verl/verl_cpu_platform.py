"""TEST-ONLY verl plug-in: a `cpu` platform so verl's SFT trainer and training worker run on CPU.

verl 0.9.1 knows only accelerator platforms (nvidia, npu, rocm) and hard-wires NCCL. This module
is imported by verl itself while `import verl` runs, when the environment says

    VERL_USE_EXTERNAL_MODULES=verl_cpu_platform   (this directory on PYTHONPATH)
    VERL_PLATFORM=cpu

It registers a platform whose device is `cpu`, whose collective backend is gloo, whose
`torch.<device>` module is a no-op stand-in, and whose Ray resource is `CPU`. Three further
adjustments, each for a concrete failure seen without it:

* verl builds the process-group backend string as `cpu:gloo,<device>:<backend>`, i.e.
  `cpu:gloo,cpu:gloo` here, which torch rejects (device listed twice): we collapse it to `gloo`.
* verl's FSDP engines are registered for devices cuda/npu only: we register the same classes for
  `cpu` (lazily, when `verl.workers.engine` is first imported, to avoid an import cycle).
* `current_device()` returns "cpu" (not 0), because verl moves batches with `.to(get_device_id())`
  and `.to(0)` would mean cuda:0.

Never use this for real training: it exists so that the verl backend's tests exercise verl's own
trainer code paths on a CPU-only CI machine.
"""

from __future__ import annotations

import contextlib
import sys
from types import ModuleType
from typing import Any

import torch
import torch.distributed
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry


class _NoDevice(ModuleType):
    """Stands in for `torch.cuda`: memory queries answer 0, RNG state is the CPU generator's."""

    def __init__(self) -> None:
        super().__init__("verl_cpu_platform.no_device")

    def is_available(self) -> bool:
        return False  # verl then skips its accelerator memory bookkeeping

    def get_rng_state(self, *a: Any, **k: Any) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor, *a: Any, **k: Any) -> None:
        torch.set_rng_state(state)

    def mem_get_info(self, *a: Any, **k: Any) -> tuple[int, int]:
        return (0, 0)

    def get_device_name(self, *a: Any, **k: Any) -> str:
        return "CPU"  # verl's flops counter looks the name up in its table (unknown -> inf)

    def __getattr__(self, name: str) -> Any:
        # empty_cache, synchronize, max_memory_allocated, set_device, manual_seed, ...: no-ops.
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: 0


_NO_DEVICE = _NoDevice()


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return _NO_DEVICE

    def is_available(self) -> bool:
        return True

    def current_device(self) -> Any:
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


# ---- process group: "cpu:gloo,cpu:gloo" -> "gloo"
_init_process_group = torch.distributed.init_process_group


def _init_process_group_cpu(*args: Any, backend: str | None = None, **kwargs: Any) -> Any:
    if isinstance(backend, str) and set(backend.split(",")) == {"cpu:gloo"}:
        backend = "gloo"
    return _init_process_group(*args, backend=backend, **kwargs)


torch.distributed.init_process_group = _init_process_group_cpu


# ---- engines: register verl's FSDP engines for device "cpu" once verl.workers.engine is imported
def _register_cpu_engines() -> None:
    from verl.workers.engine.base import EngineRegistry

    for backends in EngineRegistry._engines.values():
        for registry in backends.values():
            for device in ("cuda", ("cuda", "nvidia")):
                if device in registry and "cpu" not in registry:
                    registry["cpu"] = registry[device]


class _AfterEngineImport:
    """A meta-path hook that runs `_register_cpu_engines` right after `verl.workers.engine` loads."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "verl.workers.engine":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _register_cpu_engines()

        loader.exec_module = exec_then_register
        return spec


if "verl.workers.engine" in sys.modules:
    _register_cpu_engines()
else:
    sys.meta_path.insert(0, _AfterEngineImport())
