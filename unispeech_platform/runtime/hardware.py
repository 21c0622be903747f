"""Hardware facts and the precision they call for.

A preset cannot know the machine it lands on: bf16 autocast on a CPU without native bf16 instructions (e.g. AMD
EPYC Zen 1-3: no avx512_bf16/amx_bf16) is ~10x slower than fp32, and GPUs before Ampere have no fast bf16. So
``train.precision: auto`` is decided here, from facts read off the machine (``/proc/cpuinfo`` flags, CUDA compute
capabilities), never assumed from the vendor or model name. The decision carries a one-sentence reason that is
logged and stored as MLflow tags, so a slow run says why it ran in the precision it did.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "bf16", "fp16"]
REQUESTABLE = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 flags (as Linux names them in /proc/cpuinfo) of instructions that compute in bf16 natively."""
BF16_MIN_CAPABILITY = (8, 0)
"""Ampere and later: bf16 tensor cores."""
FP16_MIN_CAPABILITY = (7, 0)
"""Volta/Turing: fp16 tensor cores, no bf16."""


@dataclass(frozen=True)
class HardwareFacts:
    """What this process can use, as measured (injectable in tests)."""

    cpu_model: str
    cpu_flags: frozenset[str]
    cpu_count: int
    """CPUs this process may run on (affinity mask, capped by a cgroup CPU quota)."""
    cuda_capabilities: tuple[tuple[int, int], ...] = ()
    """(major, minor) compute capability of each visible GPU."""
    gpu_names: tuple[str, ...] = ()

    @property
    def has_native_cpu_bf16(self) -> bool:
        return any(flag in self.cpu_flags for flag in NATIVE_BF16_FLAGS)

    def describe(self) -> str:
        """One line for logs, e.g. ``AMD EPYC 7B13, 2 cores, flags: no avx512_bf16/amx_bf16, no GPU``."""
        present = [f for f in NATIVE_BF16_FLAGS if f in self.cpu_flags]
        flags = "flags: " + (" ".join(present) if present else "no " + "/".join(NATIVE_BF16_FLAGS))
        cores = f"{self.cpu_count} core" + ("" if self.cpu_count == 1 else "s")
        if not self.cuda_capabilities:
            gpus = "no GPU"
        else:
            n = len(self.cuda_capabilities)
            names = ", ".join(
                f"{name} (sm {major}.{minor})"
                for name, (major, minor) in zip(self.gpu_names, self.cuda_capabilities)
            )
            gpus = f"{n} GPU{'' if n == 1 else 's'}: {names}"
        return f"{self.cpu_model}, {cores}, {flags}, {gpus}"


def _first_processor_block(text: str) -> dict[str, str]:
    """Key/value pairs of the first processor block (blocks are separated by blank lines)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def usable_cpus() -> int:
    """CPUs the scheduler lets this process use: the affinity mask, capped by a cgroup v2 quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def detect_hardware(cpuinfo_path: str | os.PathLike[str] = "/proc/cpuinfo", *, probe_cuda: bool = True) -> HardwareFacts:
    """Measure the CPU (model name and flags of the first processor in ``cpuinfo_path``) and the visible CUDA
    devices. A missing/unreadable cpuinfo (macOS, restricted containers) gives empty flags, hence no native bf16:
    the safe answer. ``probe_cuda=False`` skips torch.cuda (facts about the CPU alone)."""
    try:
        fields = _first_processor_block(Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        fields = {}
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine() or "unknown CPU"
    flags = frozenset((fields.get("flags") or fields.get("Features") or "").split())  # Features: aarch64
    capabilities: tuple[tuple[int, int], ...] = ()
    names: tuple[str, ...] = ()
    if probe_cuda:
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            capabilities = tuple(tuple(torch.cuda.get_device_capability(i)) for i in range(n))  # type: ignore[misc]
            names = tuple(torch.cuda.get_device_name(i) for i in range(n))
    return HardwareFacts(model, flags, usable_cpus(), capabilities, names)


def machine_line() -> str:
    """One line naming where a result was measured (an experiment's results block, its MLflow tag ``machine``):
    the facts its speed depends on, i.e. CPU model, usable cores, native-bf16 flags, GPUs, torch and the OS."""
    import torch

    return f"{detect_hardware().describe()}, torch {torch.__version__}, {platform.system()}"


@dataclass(frozen=True)
class PrecisionChoice:
    """The compute precision of a job and the fact that decided it."""

    precision: Precision
    reason: str
    """One sentence naming the deciding fact (logged, and stored as the MLflow tag precision_reason)."""

    def as_tags(self) -> dict[str, str]:
        return {"precision": self.precision, "precision_reason": self.reason}


def _slowest_gpu(facts: HardwareFacts) -> tuple[str, tuple[int, int]]:
    """Name and capability of the least capable visible GPU: every rank must run the same precision."""
    i = min(range(len(facts.cuda_capabilities)), key=lambda k: facts.cuda_capabilities[k])
    name = facts.gpu_names[i] if i < len(facts.gpu_names) else f"cuda:{i}"
    return name, facts.cuda_capabilities[i]


def resolve_precision(requested: str, *, use_gpu: bool, facts: HardwareFacts) -> PrecisionChoice:
    """``requested`` is train.precision: auto decides from ``facts``; fp32/bf16/fp16 are honoured where they can
    run at all. Raises ValueError (one line) for an unknown value, fp16 on CPU, or use_gpu without a CUDA device."""
    if requested not in REQUESTABLE:
        raise ValueError(f"train.precision must be one of {', '.join(REQUESTABLE)}, got {requested!r}")
    if use_gpu:
        return _resolve_gpu(requested, facts)
    return _resolve_cpu(requested, facts)


def _resolve_gpu(requested: str, facts: HardwareFacts) -> PrecisionChoice:
    if not facts.cuda_capabilities:
        raise ValueError(
            "train.use_gpu=true but no CUDA device is visible (torch.cuda.is_available() is False); "
            "set train.use_gpu=false or run on a GPU node"
        )
    name, (major, minor) = _slowest_gpu(facts)
    gpu = f"GPU {name} (compute capability {major}.{minor})"
    bf16_ok = (major, minor) >= BF16_MIN_CAPABILITY
    if requested == "auto":
        if bf16_ok:
            return PrecisionChoice("bf16", f"auto: {gpu} has bf16 tensor cores")
        if (major, minor) >= FP16_MIN_CAPABILITY:
            return PrecisionChoice(
                "fp16", f"auto: {gpu} has no bf16 support (needs 8.0+), fp16 with dynamic loss scaling instead"
            )
        return PrecisionChoice("fp32", f"auto: {gpu} has no tensor cores (needs 7.0+), fp32")
    if requested == "bf16" and not bf16_ok:
        return PrecisionChoice(
            "bf16", f"explicit bf16: {gpu} has no native bf16 (needs 8.0+), it will be emulated and slow"
        )
    if requested == "fp16":
        return PrecisionChoice("fp16", f"explicit fp16 on {gpu}, with dynamic loss scaling")
    return PrecisionChoice(requested, f"explicit {requested} on {gpu}")  # type: ignore[arg-type]


def _resolve_cpu(requested: str, facts: HardwareFacts) -> PrecisionChoice:
    cpu = f"CPU {facts.cpu_model}"
    native = [f for f in NATIVE_BF16_FLAGS if f in facts.cpu_flags]
    missing = f"has no {'/'.join(NATIVE_BF16_FLAGS)} flag"
    if requested == "fp16":
        raise ValueError(
            "train.precision=fp16 is not supported on CPU (no fp16 autocast or loss scaling there); "
            "use auto, bf16 or fp32"
        )
    if requested == "auto":
        if native:
            return PrecisionChoice("bf16", f"auto: {cpu} has {'/'.join(native)}, bf16 autocast runs natively")
        return PrecisionChoice(
            "fp32", f"auto: {cpu} {missing}, bf16 autocast would be ~10x slower than fp32"
        )
    if requested == "bf16":
        if native:
            return PrecisionChoice("bf16", f"explicit bf16: {cpu} has {'/'.join(native)}, bf16 autocast runs natively")
        return PrecisionChoice(
            "bf16", f"explicit bf16: {cpu} {missing}, bf16 autocast will be ~10x slower than fp32"
        )
    return PrecisionChoice("fp32", f"explicit fp32 on {cpu}")


def threads_per_worker(cpus_per_worker: float, cpu_count: int) -> int:
    """torch intra-op threads for one worker: its whole reserved CPUs, never more than the machine has (Ray's
    logical CPUs may exceed the cores; more threads than cores only adds OpenMP barrier waits)."""
    if cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
    return max(1, min(math.floor(cpus_per_worker), cpu_count))


def merge_facts(per_rank: list[HardwareFacts]) -> HardwareFacts:
    """One set of facts every rank agrees on (all ranks must run one precision): CPU flags all ranks have, the
    fewest CPUs, every rank's GPUs (the least capable decides). The first rank's CPU model names it."""
    first = per_rank[0]
    flags = frozenset.intersection(*(f.cpu_flags for f in per_rank))
    models = {f.cpu_model for f in per_rank}
    model = first.cpu_model if len(models) == 1 else f"{first.cpu_model} (+{len(models) - 1} other CPU models)"
    return HardwareFacts(
        model, flags, min(f.cpu_count for f in per_rank),
        tuple(c for f in per_rank for c in f.cuda_capabilities), tuple(n for f in per_rank for n in f.gpu_names),
    )
