"""unispeech_core must stay importable without the platform's heavy dependencies."""

import subprocess
import sys


def test_core_imports_no_ray_deepspeed_mlflow():
    code = (
        "import sys, unispeech_core, unispeech_core.models, unispeech_core.checkpoint\n"
        "bad = [m for m in ('ray', 'deepspeed', 'mlflow', 'transformers') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
