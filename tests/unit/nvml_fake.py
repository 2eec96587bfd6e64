"""A stand-in for the `pynvml` module (nvidia-ml-py): the functions vlmopt.hw.nvml calls, with NVML's error
classes and codes, backed by a small in-memory fleet. Tests install it with monkeypatch at sys.modules['pynvml'].
"""

from __future__ import annotations

import ctypes
import types
from dataclasses import dataclass, field

MIB = 1024**2

# nvml.h return codes
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class c_nvmlGpuInstancePlacement_t(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint), ("size", ctypes.c_uint)]


@dataclass
class FakeProfile:
    index: int  # NVML_GPU_INSTANCE_PROFILE_* index
    id: int
    name: str
    slices: int
    memory_mb: int
    count: int
    starts: list[int]
    size: int
    free: int


@dataclass
class FakeInstance:
    name: str
    gi_id: int
    start: int
    memory_mb: int
    reachable: bool = True  # False: another container's slice (NVML in a pod opens only the pod's own)


@dataclass
class FakeGpu:
    name: str
    pci_device_id: int
    total_mb: int
    used_mb: int
    mig: tuple[int, int] | None = None  # (current, pending); None = not MIG-capable
    profiles: list[FakeProfile] = field(default_factory=list)
    instances: list[FakeInstance] = field(default_factory=list)
    capability: tuple[int, int] = (9, 0)


def h100_profiles(with_names: bool = True) -> list[FakeProfile]:
    rows = [  # index, id, name, slices, MiB, count, starts, size
        (0x0, 19, "1g.10gb", 1, 9984, 7, [0, 1, 2, 3, 4, 5, 6], 1),
        (0x7, 20, "1g.10gb+me", 1, 9984, 1, [0, 1, 2, 3, 4, 5, 6], 1),
        (0x9, 15, "1g.20gb", 1, 20096, 4, [0, 2, 4, 6], 2),
        (0x1, 14, "2g.20gb", 2, 20096, 3, [0, 2, 4], 2),
        (0x2, 9, "3g.40gb", 3, 40448, 2, [0, 4], 4),
        (0x3, 5, "4g.40gb", 4, 40448, 1, [0], 4),
        (0x4, 0, "7g.80gb", 7, 81152, 1, [0], 8),
    ]
    return [FakeProfile(i, pid, ("MIG " + n) if with_names else "", s, mb, c, st, sz, free=c)
            for i, pid, n, s, mb, c, st, sz in rows]


def default_fleet() -> list[FakeGpu]:
    h100 = FakeGpu("NVIDIA H100 80GB HBM3", 0x233010DE, 81559, 1200, mig=(1, 1), profiles=h100_profiles(),
                   instances=[FakeInstance("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 2, 4, 40448),
                              FakeInstance("NVIDIA H100 80GB HBM3 MIG 2g.20gb", 3, 0, 20096)])
    l4 = FakeGpu("NVIDIA L4", 0x27B810DE, 23034, 0, capability=(8, 9))
    return [h100, l4]


def make_fake_pynvml(fleet: list[FakeGpu] | None = None, fail: dict[str, int] | None = None) -> types.ModuleType:
    """`fail` maps a function name to the NVML error code it raises (e.g. {'nvmlInit': 12})."""
    fleet = default_fleet() if fleet is None else fleet
    fail = fail or {}
    module = types.ModuleType("pynvml")
    module.calls = []  # every NVML function called, in order
    module.NVMLError = NVMLError
    module.c_nvmlGpuInstancePlacement_t = c_nvmlGpuInstancePlacement_t
    module.NVML_DEVICE_MIG_ENABLE = 1
    module.NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
    for name, value in globals().items():
        if name.startswith("NVML_ERROR_"):
            setattr(module, name, value)

    def nvml(fn):
        def wrapper(*args):
            module.calls.append(fn.__name__)
            if fn.__name__ in fail:
                raise NVMLError(fail[fn.__name__])
            return fn(*args)

        wrapper.__name__ = fn.__name__
        setattr(module, fn.__name__, wrapper)
        return wrapper

    @nvml
    def nvmlInit():
        return None

    @nvml
    def nvmlShutdown():
        return None

    @nvml
    def nvmlSystemGetDriverVersion():
        return "580.95.05"

    @nvml
    def nvmlSystemGetCudaDriverVersion():
        return 13000

    @nvml
    def nvmlDeviceGetCount():
        return len(fleet)

    @nvml
    def nvmlDeviceGetHandleByIndex(index):
        return ("gpu", index)

    def gpu_of(handle):
        return fleet[handle[1]]

    @nvml
    def nvmlDeviceGetName(handle):
        if handle[0] == "mig":
            return gpu_of(handle).instances[handle[2]].name
        return gpu_of(handle).name.encode()  # older nvidia-ml-py returned bytes

    @nvml
    def nvmlDeviceGetUUID(handle):
        return f"GPU-{handle[1]:08d}" if handle[0] == "gpu" else f"MIG-{handle[1]}-{handle[2]}"

    @nvml
    def nvmlDeviceGetPciInfo(handle):
        return types.SimpleNamespace(pciDeviceId=gpu_of(handle).pci_device_id)

    @nvml
    def nvmlDeviceGetMemoryInfo(handle):
        gpu = gpu_of(handle)
        if handle[0] == "mig":
            total = gpu.instances[handle[2]].memory_mb * MIB
            return types.SimpleNamespace(total=total, used=0, free=total)
        return types.SimpleNamespace(total=gpu.total_mb * MIB, used=gpu.used_mb * MIB,
                                     free=(gpu.total_mb - gpu.used_mb) * MIB)

    @nvml
    def nvmlDeviceGetCudaComputeCapability(handle):
        return gpu_of(handle).capability

    @nvml
    def nvmlDeviceGetMigMode(handle):
        gpu = gpu_of(handle)
        if gpu.mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return list(gpu.mig)

    def profile_by_index(handle, index):
        for profile in gpu_of(handle).profiles:
            if profile.index == index:
                return profile
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED if index < 0x12 else NVML_ERROR_INVALID_ARGUMENT)

    def profile_by_id(handle, profile_id):
        for profile in gpu_of(handle).profiles:
            if profile.id == profile_id:
                return profile
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    @nvml
    def nvmlDeviceGetGpuInstanceProfileInfo(handle, index, version=2):
        p = profile_by_index(handle, index)
        return types.SimpleNamespace(id=p.id, sliceCount=p.slices, instanceCount=p.count, memorySizeMB=p.memory_mb,
                                     name=p.name.encode(), multiprocessorCount=0)

    @nvml
    def nvmlDeviceGetGpuInstanceRemainingCapacity(handle, profile_id):
        return profile_by_id(handle, profile_id).free

    @nvml
    def nvmlDeviceGetGpuInstancePossiblePlacements(handle, profile_id, placements, count_ref):
        p = profile_by_id(handle, profile_id)
        count = ctypes.cast(count_ref, ctypes.POINTER(ctypes.c_uint)).contents
        if placements is None:
            count.value = len(p.starts)
            return 0
        for i, start in enumerate(p.starts[: count.value]):
            placements[i].start, placements[i].size = start, p.size
        return 0

    @nvml
    def nvmlDeviceGetMaxMigDeviceCount(handle):
        return 7 if gpu_of(handle).mig else 0

    @nvml
    def nvmlDeviceGetMigDeviceHandleByIndex(handle, index):
        if index >= len(gpu_of(handle).instances):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        if not gpu_of(handle).instances[index].reachable:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return ("mig", handle[1], index)

    @nvml
    def nvmlDeviceGetHandleByUUID(uuid):
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if uuid.startswith("GPU-"):
            return ("gpu", int(uuid[4:]))
        if uuid.startswith("MIG-"):
            gpu, index = (int(x) for x in uuid[4:].split("-"))
            return ("mig", gpu, index)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    @nvml
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig_handle):
        return ("gpu", mig_handle[1])

    @nvml
    def nvmlDeviceGetGpuInstanceId(mig_handle):
        return gpu_of(mig_handle).instances[mig_handle[2]].gi_id

    @nvml
    def nvmlDeviceGetGpuInstanceById(handle, gi_id):
        for instance in gpu_of(handle).instances:
            if instance.gi_id == gi_id:
                return instance
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    @nvml
    def nvmlGpuInstanceGetInfo(instance):
        return types.SimpleNamespace(placement=types.SimpleNamespace(start=instance.start, size=0))

    def forbidden(*_args):
        raise AssertionError("vlmopt must never change MIG state")

    for name in ("nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
                 "nvmlGpuInstanceDestroy", "nvmlGpuInstanceCreateComputeInstance"):
        setattr(module, name, forbidden)
    return module
