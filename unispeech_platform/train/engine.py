"""DeepSpeed engine construction from the train/optim sections.

The model arrives plain (no DeepSpeed code inside it); ZeRO partitioning, precision, clipping and gradient
accumulation are applied here, from outside, on an already-initialised torch.distributed process group.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from unispeech_platform.config.sections import OptimSection, TrainSection
from unispeech_platform.runtime.hardware import Precision
from unispeech_platform.train.safe_load import install_weights_only_loads


def autocast(precision: Precision, use_gpu: bool) -> torch.autocast:
    """The forward-pass context. On CPU, bf16 means torch.autocast around the forward (fp32 weights and optimizer
    state; fast only on CPUs with native bf16, which precision=auto checks). On GPU the precision is DeepSpeed's
    (bf16/fp16 weights, see deepspeed_config): no autocast."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=not use_gpu and precision == "bf16")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def deepspeed_config(train: TrainSection, optim: OptimSection, world_size: int, precision: Precision = "fp32"
                     ) -> dict[str, Any]:
    """The DeepSpeed JSON config for the resolved ``precision``. Micro-batches are whole length-bucketed batches, so
    micro batch size is 1 "batch"; train_batch_size must then equal 1 x accumulation x world size (DeepSpeed checks
    it). On GPU, bf16 and fp16 are DeepSpeed's mixed-precision modes; fp16 with dynamic loss scaling (loss_scale 0)."""
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "train_batch_size": train.grad_accum_steps * world_size,
        "gradient_clipping": train.grad_clip,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": optim.lr,
                "betas": list(optim.betas),
                "eps": optim.eps,
                "weight_decay": optim.weight_decay,
                # torch's AdamW: no fused-op compilation on CPU; on GPU DeepSpeed's FusedAdam is used.
                "torch_adam": not train.use_gpu,
                "adam_w_mode": True,
            },
        },
        "zero_optimization": {"stage": train.zero_stage},
    }
    if train.zero_stage == 3:
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    if train.use_gpu and precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif train.use_gpu and precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return _merge(cfg, train.deepspeed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and other 1-D parameters (embeddings of masks, codevectors keep it)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_engine(model: nn.Module, train: TrainSection, optim: OptimSection, world_size: int,
                 precision: Precision = "fp32"):
    """deepspeed.initialize on the process group Ray Train already set up (dist_init_required=False)."""
    import deepspeed

    if train.activation_checkpointing:
        model.gradient_checkpointing_enable()
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, optim.weight_decay),
        config=deepspeed_config(train, optim, world_size, precision),
        dist_init_required=False,
    )
    install_weights_only_loads(engine)  # load_checkpoint never unpickles arbitrary objects (docs/training.md#checkpoints)
    return engine


def set_lr(engine, lr: float) -> None:
    """Schedules are applied by us each update (pure functions of the step), not by a DeepSpeed scheduler."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def grad_norm(engine) -> float:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return float("nan")
    return float(norm.item() if isinstance(norm, torch.Tensor) else norm)


def state_memory_mb(engine) -> dict[str, float]:
    """Measured bytes (MB) this rank holds in parameters and in optimizer state (master weights + moments),
    counting each storage once. Under ZeRO-3 a parameter's local part is its `ds_tensor` partition."""
    seen: set[int] = set()

    def size(t: torch.Tensor) -> int:
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() == 0:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()

    params = sum(size(getattr(p, "ds_tensor", p)) for p in engine.module.parameters())
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)  # ZeRO wraps the torch optimizer
    optim = 0
    for group in inner.param_groups:
        optim += sum(size(p) for p in group["params"])  # fp32 master partitions (ZeRO) or the params themselves
    for st in inner.state.values():
        optim += sum(size(v) for v in st.values() if isinstance(v, torch.Tensor))
    return {"memory/params_mb": params / 2**20, "memory/optimizer_mb": optim / 2**20}
