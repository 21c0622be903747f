"""Learning-rate schedules and the DeepSpeed config derived from the train/optim sections."""

from __future__ import annotations

import pytest
import torch

from unispeech_platform.config import OptimSection, TrainSection
from unispeech_platform.train.engine import autocast, deepspeed_config
from unispeech_platform.train.schedules import learning_rate


def test_polynomial_warms_up_then_decays_to_end_lr():
    cfg = OptimSection(lr=1e-3, warmup_steps=10, schedule="polynomial", end_lr=1e-5)
    lrs = [learning_rate(cfg, s, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[100] == pytest.approx(1e-5)


def test_tri_stage_phases():
    cfg = OptimSection(lr=1e-3, schedule="tri_stage", phase_ratio=(0.1, 0.4, 0.5), init_lr_scale=0.01,
                       final_lr_scale=0.05)
    assert learning_rate(cfg, 0, 100) == pytest.approx(1e-5)
    assert learning_rate(cfg, 10, 100) == pytest.approx(1e-3) and learning_rate(cfg, 49, 100) == pytest.approx(1e-3)
    assert learning_rate(cfg, 100, 100) == pytest.approx(5e-5)


def test_deepspeed_config_batch_arithmetic_and_precision():
    train = TrainSection(zero_stage=3, grad_accum_steps=4, grad_clip=1.0)
    ds = deepspeed_config(train, OptimSection(), world_size=8)
    assert ds["train_batch_size"] == 1 * 4 * 8 and ds["zero_optimization"]["stage"] == 3
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.98] and ds["optimizer"]["params"]["torch_adam"]
    assert "bf16" not in ds and "fp16" not in ds
    gpu = TrainSection(use_gpu=True, deepspeed={"zero_optimization": {"overlap_comm": True}})
    ds = deepspeed_config(gpu, OptimSection(), world_size=8, precision="bf16")
    assert ds["bf16"] == {"enabled": True} and ds["zero_optimization"] == {"stage": 2, "overlap_comm": True}
    ds = deepspeed_config(gpu, OptimSection(), world_size=8, precision="fp16")  # V100/T4: dynamic loss scaling
    assert ds["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 16} and "bf16" not in ds
    cpu = TrainSection(use_gpu=False)  # CPU bf16 = torch.autocast around the forward, fp32 DeepSpeed
    assert "bf16" not in deepspeed_config(cpu, OptimSection(), world_size=2, precision="bf16")
    with autocast("bf16", use_gpu=False):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    for precision, use_gpu in (("fp32", False), ("bf16", True)):
        with autocast(precision, use_gpu):
            assert not torch.is_autocast_enabled("cpu")


def test_fp16_is_refused_on_cpu_by_the_config():
    from unispeech_platform.config import ConfigError, PretrainJobConfig, load_config

    with pytest.raises(ConfigError, match="fp16 needs GPUs"):
        load_config(PretrainJobConfig, None, ["data.path=x", "train.precision=fp16", "train.use_gpu=false"])
    assert load_config(PretrainJobConfig, None, ["data.path=x", "train.precision=fp16"]).train.use_gpu is None
