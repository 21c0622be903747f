"""train.precision=auto decides from measured hardware facts; explicit values win unless they cannot run."""

from __future__ import annotations

import os

import pytest

from unispeech_platform.runtime.hardware import (
    HardwareFacts,
    PrecisionChoice,
    detect_hardware,
    resolve_precision,
    threads_per_worker,
    usable_cpus,
)

BASE_FLAGS = frozenset("fpu sse sse2 avx avx2 fma avx512f avx512bw avx512vl".split())
ZEN1 = HardwareFacts("AMD EPYC 7551 32-Core Processor", BASE_FLAGS, 2)
ZEN4 = HardwareFacts("AMD EPYC 9B14", BASE_FLAGS | {"avx512_bf16"}, 4)
SAPPHIRE = HardwareFacts("Intel(R) Xeon(R) Platinum 8480+", BASE_FLAGS | {"amx_bf16", "amx_tile"}, 8)


def gpus(*devices: tuple[str, tuple[int, int]]) -> HardwareFacts:
    return HardwareFacts(
        "Intel(R) Xeon(R) CPU @ 2.20GHz", BASE_FLAGS, 8,
        tuple(cap for _, cap in devices), tuple(name for name, _ in devices),
    )


V100 = ("Tesla V100-SXM2-16GB", (7, 0))
T4 = ("Tesla T4", (7, 5))
A100 = ("NVIDIA A100-SXM4-80GB", (8, 0))
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


# -- CPU ----------------------------------------------------------------------------------------------------


def test_auto_on_cpu_without_native_bf16_is_fp32():
    choice = resolve_precision("auto", use_gpu=False, facts=ZEN1)
    assert choice == PrecisionChoice(
        "fp32",
        "auto: CPU AMD EPYC 7551 32-Core Processor has no avx512_bf16/amx_bf16 flag, "
        "bf16 autocast would be ~10x slower than fp32",
    )


def test_auto_on_cpu_with_avx512_bf16_is_bf16():
    choice = resolve_precision("auto", use_gpu=False, facts=ZEN4)
    assert choice == PrecisionChoice("bf16", "auto: CPU AMD EPYC 9B14 has avx512_bf16, bf16 autocast runs natively")


def test_auto_on_cpu_with_amx_bf16_is_bf16():
    choice = resolve_precision("auto", use_gpu=False, facts=SAPPHIRE)
    assert choice == PrecisionChoice(
        "bf16", "auto: CPU Intel(R) Xeon(R) Platinum 8480+ has amx_bf16, bf16 autocast runs natively"
    )
    assert SAPPHIRE.has_native_cpu_bf16 is True
    assert ZEN1.has_native_cpu_bf16 is False


def test_explicit_bf16_on_cpu_without_native_bf16_is_allowed_but_says_slow():
    choice = resolve_precision("bf16", use_gpu=False, facts=ZEN1)
    assert choice.precision == "bf16"
    assert choice.reason == (
        "explicit bf16: CPU AMD EPYC 7551 32-Core Processor has no avx512_bf16/amx_bf16 flag, "
        "bf16 autocast will be ~10x slower than fp32"
    )


def test_explicit_fp32_on_cpu_with_native_bf16_wins():
    assert resolve_precision("fp32", use_gpu=False, facts=ZEN4) == PrecisionChoice(
        "fp32", "explicit fp32 on CPU AMD EPYC 9B14"
    )


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError) as e:
        resolve_precision("fp16", use_gpu=False, facts=ZEN4)
    assert str(e.value) == (
        "train.precision=fp16 is not supported on CPU (no fp16 autocast or loss scaling there); "
        "use auto, bf16 or fp32"
    )


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError) as e:
        resolve_precision("tf32", use_gpu=False, facts=ZEN1)
    assert str(e.value) == "train.precision must be one of auto, fp32, bf16, fp16, got 'tf32'"


# -- GPU ----------------------------------------------------------------------------------------------------


def test_auto_on_volta_is_fp16():
    choice = resolve_precision("auto", use_gpu=True, facts=gpus(V100))
    assert choice == PrecisionChoice(
        "fp16",
        "auto: GPU Tesla V100-SXM2-16GB (compute capability 7.0) has no bf16 support (needs 8.0+), "
        "fp16 with dynamic loss scaling instead",
    )


def test_auto_on_ampere_is_bf16():
    choice = resolve_precision("auto", use_gpu=True, facts=gpus(A100))
    assert choice == PrecisionChoice(
        "bf16", "auto: GPU NVIDIA A100-SXM4-80GB (compute capability 8.0) has bf16 tensor cores"
    )


def test_auto_on_hopper_is_bf16():
    choice = resolve_precision("auto", use_gpu=True, facts=gpus(H100, H100))
    assert choice == PrecisionChoice(
        "bf16", "auto: GPU NVIDIA H100 80GB HBM3 (compute capability 9.0) has bf16 tensor cores"
    )


def test_auto_on_mixed_gpus_follows_the_least_capable():
    choice = resolve_precision("auto", use_gpu=True, facts=gpus(A100, T4))
    assert choice.precision == "fp16"
    assert choice.reason == (
        "auto: GPU Tesla T4 (compute capability 7.5) has no bf16 support (needs 8.0+), "
        "fp16 with dynamic loss scaling instead"
    )


def test_auto_on_pre_volta_gpu_is_fp32():
    choice = resolve_precision("auto", use_gpu=True, facts=gpus(("Tesla P100-PCIE-16GB", (6, 0))))
    assert choice == PrecisionChoice(
        "fp32", "auto: GPU Tesla P100-PCIE-16GB (compute capability 6.0) has no tensor cores (needs 7.0+), fp32"
    )


def test_explicit_values_win_on_gpu():
    assert resolve_precision("fp32", use_gpu=True, facts=gpus(H100)) == PrecisionChoice(
        "fp32", "explicit fp32 on GPU NVIDIA H100 80GB HBM3 (compute capability 9.0)"
    )
    assert resolve_precision("fp16", use_gpu=True, facts=gpus(A100)) == PrecisionChoice(
        "fp16", "explicit fp16 on GPU NVIDIA A100-SXM4-80GB (compute capability 8.0), with dynamic loss scaling"
    )
    assert resolve_precision("bf16", use_gpu=True, facts=gpus(A100)) == PrecisionChoice(
        "bf16", "explicit bf16 on GPU NVIDIA A100-SXM4-80GB (compute capability 8.0)"
    )
    assert resolve_precision("bf16", use_gpu=True, facts=gpus(V100)) == PrecisionChoice(
        "bf16",
        "explicit bf16: GPU Tesla V100-SXM2-16GB (compute capability 7.0) has no native bf16 (needs 8.0+), "
        "it will be emulated and slow",
    )


def test_use_gpu_without_cuda_is_refused():
    with pytest.raises(ValueError) as e:
        resolve_precision("auto", use_gpu=True, facts=ZEN4)
    assert str(e.value) == (
        "train.use_gpu=true but no CUDA device is visible (torch.cuda.is_available() is False); "
        "set train.use_gpu=false or run on a GPU node"
    )


def test_choice_as_mlflow_tags():
    choice = resolve_precision("auto", use_gpu=True, facts=gpus(H100))
    assert choice.as_tags() == {
        "precision": "bf16",
        "precision_reason": "auto: GPU NVIDIA H100 80GB HBM3 (compute capability 9.0) has bf16 tensor cores",
    }


# -- detection ----------------------------------------------------------------------------------------------

CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 0
cpu MHz\t\t: 2450.000
cache size\t: 512 KB
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall avx2 avx512f avx512_bf16 sha_ni
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2
bogomips\t: 4900.00

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: Some Other CPU
flags\t\t: fpu amx_bf16
bogomips\t: 4900.00

"""


def test_detect_hardware_reads_the_first_processor_block(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    facts = detect_hardware(path, probe_cuda=False)
    assert facts.cpu_model == "AMD EPYC 7B13"
    assert facts.cpu_flags == frozenset(
        "fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall avx2 avx512f avx512_bf16 sha_ni".split()
    )
    assert facts.has_native_cpu_bf16 is True
    assert facts.cpu_count == usable_cpus()
    assert 1 <= facts.cpu_count <= len(os.sched_getaffinity(0))
    assert facts.cuda_capabilities == ()
    assert facts.gpu_names == ()
    n = facts.cpu_count
    assert facts.describe() == f"AMD EPYC 7B13, {n} core{'' if n == 1 else 's'}, flags: avx512_bf16, no GPU"


def test_detect_hardware_without_cpuinfo_has_no_flags(tmp_path):
    facts = detect_hardware(tmp_path / "missing", probe_cuda=False)
    assert facts.cpu_flags == frozenset()
    assert facts.has_native_cpu_bf16 is False
    assert facts.cpu_model != ""
    assert resolve_precision("auto", use_gpu=False, facts=facts).precision == "fp32"


def test_detect_hardware_on_this_machine_matches_torch():
    import torch

    facts = detect_hardware()
    assert len(facts.cuda_capabilities) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert len(facts.gpu_names) == len(facts.cuda_capabilities)


def test_describe_lists_gpus():
    facts = gpus(A100, T4)
    assert facts.describe() == (
        "Intel(R) Xeon(R) CPU @ 2.20GHz, 8 cores, flags: no avx512_bf16/amx_bf16, "
        "2 GPUs: NVIDIA A100-SXM4-80GB (sm 8.0), Tesla T4 (sm 7.5)"
    )


# -- threads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus_per_worker", "cpu_count", "expected"),
    [(1.0, 2, 1), (0.5, 2, 1), (2.9, 16, 2), (8.0, 2, 2), (8.0, 64, 8), (4.0, 4, 4)],
)
def test_threads_per_worker(cpus_per_worker, cpu_count, expected):
    assert threads_per_worker(cpus_per_worker, cpu_count) == expected


def test_threads_per_worker_rejects_nonpositive_cpus():
    with pytest.raises(ValueError) as e:
        threads_per_worker(0.0, 4)
    assert str(e.value) == "cpus_per_worker must be > 0, got 0.0"


def test_merged_facts_are_what_every_rank_has():
    from unispeech_platform.runtime.hardware import merge_facts

    a = HardwareFacts("AMD EPYC 9B14", frozenset({"avx512f", "avx512_bf16"}), 4, ((8, 0),), ("A100",))
    b = HardwareFacts("AMD EPYC 7B12", frozenset({"avx512f"}), 2, ((7, 0),), ("V100",))
    m = merge_facts([a, b])
    assert (m.cpu_flags, m.cpu_count, m.cuda_capabilities, m.gpu_names) == (
        frozenset({"avx512f"}), 2, ((8, 0), (7, 0)), ("A100", "V100"))
    assert m.cpu_model == "AMD EPYC 9B14 (+1 other CPU models)"
    assert resolve_precision("auto", use_gpu=True, facts=m).precision == "fp16"  # the V100 decides
    assert resolve_precision("auto", use_gpu=False, facts=m).precision == "fp32"  # one rank lacks avx512_bf16
    assert merge_facts([a]) == a
