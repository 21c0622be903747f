"""Build DeepSpeed's CPU communication extension (`deepspeed_shm_comm`) once, at `make setup`.

Why: DeepSpeed JIT-compiles this C++ extension the first time a CPU process group starts
(`deepspeed.comm.torch.build_shm_op`), so without this step the first training job of every new venv spent a
minute of both cores in cc1plus, inside the demo's time budget. torch's extension cache then holds it
(TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions) and every later job only loads it. On a machine whose
DeepSpeed accelerator is a GPU the extension is not used and nothing is built.

    .venv/bin/python tools/build_deepspeed_ops.py
"""

from __future__ import annotations

import time


def main() -> int:
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        print(f"deepspeed: accelerator {accelerator.device_name()}: no CPU extension to build")
        return 0
    builder = accelerator.create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        print("deepspeed: ShareMemCommBuilder not available here; DeepSpeed falls back to torch.distributed")
        return 0
    started = time.monotonic()
    builder.load(verbose=False)
    print(f"deepspeed: {builder.absolute_name()} ready ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
