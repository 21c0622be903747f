"""One-GPU acceptance check: does the platform run, and run fast, on the GPU it lands on? Prints ONE table
(check | result | value | pass) and exits 1 when any check fails.

    bench/gpu_check.sh                    # venv via `make setup` if missing, then this script under `timeout 470`
    python bench/gpu_check.py --dry-run   # print the commands and the pretraining config; run nothing

Rows: the hardware facts and what precision=auto makes of them; fp32 parity of UniSpeechForPreTraining and
UniSpeechForCTC on GPU vs CPU; a synthetic corpus (jobs.make_corpus, espeak-ng); the BASE preset
(configs/base.yaml) pretrained for a few dozen updates through the real `python -m jobs.pretrain` on a local Ray
with 1 GPU worker, ZeRO-2 and bf16, its throughput read back from MLflow and turned into MFU with the counted
model FLOPs and the GPU's dense bf16 peak; a short `jobs.finetune` from that export; `jobs.evaluate` on a GPU
actor. Every step gets a share of one time budget, so the table is printed before the outer timeout fires.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/gpu_check.py` puts bench/, not the repo root, on sys.path
    sys.path.insert(0, str(REPO))

BASE_CONFIG = "configs/base.yaml"
FINETUNE_CONFIG = "configs/finetune_tiny.yaml"
EVALUATE_CONFIG = "configs/evaluate_tiny.yaml"
EXPERIMENT = "gpu-check"
PRETRAIN_NAME, FINETUNE_NAME = "gpu-check-base", "gpu-check-finetune"
PARITY_TOL = 1e-3
# Seconds each subprocess may take at most (pretrain includes a first-use FusedAdam JIT build, ~1 min, when nvcc
# is found); all of them also share the --budget-s deadline.
STEP_CAPS = {"corpus": 90, "pretrain": 270, "finetune": 120, "evaluate": 90}
MIN_STEP_S = 30


@dataclass
class Row:
    check: str
    result: str
    value: str = ""
    ok: bool | None = True
    """True pass, False fail, None skipped (a dependency failed or no time was left)."""
    log: str | None = None
    """Log file of the subprocess behind the row, tailed on failure."""


@dataclass
class Plan:
    """Everything the check runs, derived from a work directory, so --dry-run can show it."""

    workdir: Path
    steps: int = 60
    finetune_steps: int = 20
    python: str = sys.executable
    torch_adam: bool = False
    """DeepSpeed's FusedAdam is JIT-compiled with nvcc; without a CUDA toolkit use torch's AdamW instead."""

    @property
    def corpus(self) -> Path:
        return self.workdir / "corpus"

    @property
    def runs(self) -> Path:
        return self.workdir / "runs"

    @property
    def base_export(self) -> Path:
        return self.workdir / "models" / "base"

    @property
    def eval_dir(self) -> Path:
        return self.workdir / "eval"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    def common_sets(self) -> list[str]:
        return [
            f"data.path={self.corpus}",
            f"tracking.uri={self.tracking_uri}",
            f"tracking.experiment={EXPERIMENT}",
        ]

    def train_sets(self) -> list[str]:
        """1 GPU worker, ZeRO-2, bf16: the single-GPU slice of the BASE preset's 8-GPU recipe."""
        sets = [
            "train.use_gpu=true",
            "train.num_workers=1",
            "train.precision=bf16",
            "train.zero_stage=2",
            "train.max_failures=0",
            "train.eval_every=0",
            "train.eval_max_batches=4",
            f"checkpoint.storage_path={self.runs}",
            "checkpoint.every_steps=100000",
            "tracking.log_model=false",
        ]
        if self.torch_adam:
            sets.append("train.deepspeed={optimizer: {params: {torch_adam: true}}}")
        return sets

    def pretrain_sets(self) -> list[str]:
        return [
            *self.train_sets(),
            f"train.max_steps={self.steps}",
            "train.log_every=10",
            "optim.warmup_steps=10",
            f"checkpoint.name={PRETRAIN_NAME}",
            f"checkpoint.export_dir={self.base_export}",
            *self.common_sets(),
        ]

    def finetune_sets(self) -> list[str]:
        return [
            *self.train_sets(),
            f"train.max_steps={self.finetune_steps}",
            "train.log_every=5",
            "finetune.freeze_transformer_steps=5",
            f"finetune.init_from={self.base_export}",
            f"checkpoint.name={FINETUNE_NAME}",
            *self.common_sets(),
        ]

    def evaluate_sets(self) -> list[str]:
        return [
            f"evaluate.model_path={self.runs / FINETUNE_NAME}",
            "evaluate.use_gpu=true",
            f"evaluate.output_dir={self.eval_dir}",
            *self.common_sets(),
        ]

    def commands(self) -> dict[str, list[str]]:
        def job(module: str, config: str, sets: list[str]) -> list[str]:
            return [self.python, "-m", module, "--config", config, *(a for s in sets for a in ("--set", s))]

        return {
            "corpus": [
                self.python, "-m", "jobs.make_corpus", "--out", str(self.corpus), "--langs", "en-us,es",
                "--per-lang", "600", "--speakers", "6", "--seed", "0",
            ],
            "pretrain": job("jobs.pretrain", BASE_CONFIG, self.pretrain_sets()),
            "finetune": job("jobs.finetune", FINETUNE_CONFIG, self.finetune_sets()),
            "evaluate": job("jobs.evaluate", EVALUATE_CONFIG, self.evaluate_sets()),
        }

    def configs(self) -> dict[str, Any]:
        """The job configs the commands build, validated as the jobs will validate them (no Ray, no GPU)."""
        from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig, load_config
        from unispeech_platform.evaluate.config import EvaluateJobConfig

        os.chdir(REPO)
        return {
            "pretrain": load_config(PretrainJobConfig, BASE_CONFIG, self.pretrain_sets()),
            "finetune": load_config(FinetuneJobConfig, FINETUNE_CONFIG, self.finetune_sets()),
            "evaluate": load_config(EvaluateJobConfig, EVALUATE_CONFIG, self.evaluate_sets()),
        }


def nvcc_available() -> bool:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return shutil.which("nvcc") is not None or os.path.isfile(os.path.join(home, "bin", "nvcc"))


# -- output ---------------------------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    header = ("check", "result", "value", "pass")
    cells = [(r.check, r.result, r.value, {True: "PASS", False: "FAIL", None: "SKIP"}[r.ok]) for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]

    def line(c: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def tail(path: str, lines: int = 25) -> str:
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError as e:
        return f"(no log: {e})"


# -- steps ----------------------------------------------------------------------------------------------------


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_logged(name: str, cmd: list[str], logs: Path, budget: Budget) -> tuple[int | None, str, str]:
    """Run one job in its own process group with output to <logs>/<name>.log. Returns (exit code or None on
    timeout, log path, stdout+stderr text). The group is killed on timeout, Ray's local processes included."""
    limit = min(STEP_CAPS[name], budget.left() - 15)
    log = logs / f"{name}.log"
    if limit < MIN_STEP_S:
        return None, str(log), f"not started: {budget.left():.0f} s of budget left"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray, never a cluster this machine may know
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = None
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
    text = Path(log).read_text(errors="replace")
    if code is None:
        text += f"\n(timed out after {limit:.0f} s)"
    return code, str(log), text


def status(code: int | None, seconds: float) -> str:
    return f"timeout after {seconds:.0f} s" if code is None else f"exit {code} in {seconds:.0f} s"


def hardware_row() -> tuple[Row, Any]:
    from unispeech_platform.runtime.hardware import detect_hardware, resolve_precision

    facts = detect_hardware()
    if not facts.cuda_capabilities:
        return Row("hardware", facts.describe(), "no CUDA device", False), facts
    choice = resolve_precision("auto", use_gpu=True, facts=facts)
    want = "bf16" if min(facts.cuda_capabilities) >= (8, 0) else "fp16"
    return Row("hardware", facts.describe(), f"precision auto -> {choice.precision}", choice.precision == want), facts


def base_model_config(vocab: Path | None = None) -> dict[str, Any]:
    import yaml

    model = dict(yaml.safe_load((REPO / BASE_CONFIG).read_text())["model"])
    if vocab is not None and vocab.is_file():
        from unispeech_core import PhoneTokenizer

        model["num_ctc_classes"] = len(PhoneTokenizer.from_file(str(vocab)))
    return model


def relative_error(got: Any, ref: Any) -> float:
    """Max abs difference relative to the reference's max magnitude."""
    err = (got.float() - ref.float()).abs().max().item()
    return err / max(ref.float().abs().max().item(), 1e-6)


def parity_rows() -> list[Row]:
    """Same weights and inputs (masks, negatives, labels) on CPU and GPU, fp32 with TF32 off, eval mode."""
    import torch

    from unispeech_core import UniSpeechConfig, UniSpeechForCTC, UniSpeechForPreTraining
    from unispeech_core.masking import sample_negative_indices

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = UniSpeechConfig(**base_model_config(), vocab_size=32)
    g = torch.Generator().manual_seed(0)
    lengths = (64000, 48000)
    x = torch.zeros(len(lengths), max(lengths))
    am = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, generator=g)
        am[i, :n] = 1

    def compare(name: str, model: torch.nn.Module, kwargs: dict[str, torch.Tensor], keys: tuple[str, ...]) -> Row:
        model.eval()
        outs = []
        for device, m in (("cpu", model), ("cuda", copy.deepcopy(model).to("cuda"))):
            with torch.no_grad():
                out = m(x.to(device), am.to(device), **{k: v.to(device) for k, v in kwargs.items()})
            outs.append({k: getattr(out, k).detach().float().cpu() for k in keys})
        errs = {k: relative_error(outs[1][k], outs[0][k]) for k in keys}
        ok = all(math.isfinite(e) and e < PARITY_TOL for e in errs.values())
        value = ", ".join(f"{k} {e:.1e}" for k, e in errs.items())
        return Row(f"parity {name}", f"GPU vs CPU fp32 (tol {PARITY_TOL:g} rel)", value, ok)

    torch.manual_seed(0)
    pre = UniSpeechForPreTraining(cfg)
    frames = pre._get_feat_extract_output_lengths(torch.tensor(lengths))
    mask = pre.unispeech.sample_mask_time_indices(frames, g)
    negatives = sample_negative_indices(mask, cfg.num_negatives, generator=g)
    labels = torch.randint(1, cfg.num_ctc_classes, (2, 30), generator=g)
    labels[1, 20:] = -100
    rows = [compare("pretraining", pre, dict(labels=labels, mask_time_indices=mask,
                                              sampled_negative_indices=negatives),
                    ("projected_states", "ctc_logits", "loss"))]
    torch.manual_seed(0)
    ctc_labels = torch.randint(1, cfg.vocab_size, (2, 30), generator=g)
    ctc_labels[1, 20:] = -100
    rows.append(compare("ctc", UniSpeechForCTC(cfg), dict(labels=ctc_labels), ("logits", "loss")))
    return rows


def mean_train_clip_seconds(corpus: Path) -> float | None:
    import pyarrow.parquet as pq

    samples: list[int] = []
    for path in glob.glob(str(corpus / "lang=*" / "split=train" / "*.parquet")):
        samples += pq.read_table(path, columns=["num_samples"]).column("num_samples").to_pylist()
    return sum(samples) / len(samples) / 16_000 if samples else None


def run_id_from(text: str) -> str | None:
    found = re.findall(r"mlflow run: (\S+) \(", text)
    return found[-1] if found and found[-1] != "None" else None


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


@dataclass
class Check:
    plan: Plan
    budget: Budget
    rows: list[Row] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.plan.workdir / "logs"

    def job(self, name: str, label: str) -> tuple[bool, str, str]:
        """Run one planned command; adds a failure row itself. Returns (ok, log path, output)."""
        started = time.monotonic()
        code, log, text = run_logged(name, self.plan.commands()[name], self.logs, self.budget)
        if code != 0:
            self.rows.append(Row(name, label, status(code, time.monotonic() - started), False, log))
        return code == 0, log, text

    def skip(self, *names: str, why: str) -> None:
        self.rows.extend(Row(n, why, "", None) for n in names)

    def run(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        row, facts = hardware_row()
        self.rows.append(row)
        if not facts.cuda_capabilities:
            self.skip("parity", "corpus", "pretrain", "finetune", "evaluate", why="no GPU")
            return
        gpu_name = facts.gpu_names[0]
        if self.plan.torch_adam:
            self.rows.append(Row("optimizer", "no nvcc: torch AdamW instead of FusedAdam", "", True))
        try:
            self.rows.extend(parity_rows())
        except Exception as e:  # a crash is a failed row, not a lost table
            self.rows.append(Row("parity", f"crashed: {type(e).__name__}", str(e)[:80], False))

        if shutil.which("espeak-ng") is None:
            self.rows.append(Row("corpus", "espeak-ng is not installed", "", False))
            self.skip("pretrain", "finetune", "evaluate", why="no corpus")
            return
        started = time.monotonic()
        ok, _, _ = self.job("corpus", "jobs.make_corpus")
        if not ok:
            self.skip("pretrain", "finetune", "evaluate", why="no corpus")
            return
        clip_s = mean_train_clip_seconds(self.plan.corpus)
        self.rows.append(Row("corpus", "en-us,es x 600 utterances", f"mean train clip {clip_s or 0:.2f} s, "
                             f"{time.monotonic() - started:.0f} s", clip_s is not None))

        flops = None
        try:
            from unispeech_core import UniSpeechConfig
            from unispeech_platform.runtime.flops import pretraining_flops_per_audio_second

            cfg = UniSpeechConfig(**base_model_config(self.plan.corpus / "vocab.json"))
            flops = pretraining_flops_per_audio_second(cfg, clip_s or 10.0, device="cuda")
            self.rows.append(Row("model flops", f"BASE fwd+bwd, {clip_s or 10.0:.1f} s clips",
                                 f"{flops / 1e9:.1f} GFLOP per audio s", flops > 0))
        except Exception as e:
            self.rows.append(Row("model flops", f"crashed: {type(e).__name__}", str(e)[:80], False))

        started = time.monotonic()
        ok, log, text = self.job("pretrain", "BASE, 1 GPU, ZeRO-2, bf16")
        if ok:
            self.pretrain_rows(text, log, time.monotonic() - started, flops, gpu_name)
        else:
            self.skip("throughput", "mfu", "finetune", "evaluate", why="pretraining failed")
            return

        started = time.monotonic()
        ok, log, text = self.job("finetune", "CTC from the BASE export")
        if ok:
            self.finetune_row(text, log, time.monotonic() - started)
        else:
            self.skip("evaluate", why="fine-tuning failed")
            return

        started = time.monotonic()
        ok, log, _ = self.job("evaluate", "jobs.evaluate, 1 GPU actor")
        if ok:
            self.evaluate_row(log, time.monotonic() - started)

    def pretrain_rows(self, text: str, log: str, seconds: float, flops: float | None, gpu_name: str) -> None:
        uri, run_id = self.plan.tracking_uri, run_id_from(text)
        if run_id is None:
            self.rows.append(Row("pretrain", "no MLflow run id in the output", "", False, log))
            return
        loss = metric_history(uri, run_id, "loss")
        speed = metric_history(uri, run_id, "audio_seconds_per_s")
        finite = bool(loss) and all(math.isfinite(v) for _, v in loss)
        reached = bool(loss) and loss[-1][0] == self.plan.steps
        value = f"loss {loss[0][1]:.3f} -> {loss[-1][1]:.3f} at update {loss[-1][0]}" if loss else "no loss logged"
        self.rows.append(Row("pretrain", f"BASE, 1 GPU, ZeRO-2, bf16, {seconds:.0f} s", value, finite and reached, log))
        steady = [v for step, v in speed[1:]] or [v for _, v in speed]  # the first window includes warm-up
        if not steady:
            self.rows.append(Row("throughput", "no audio_seconds_per_s logged", "", False, log))
            self.skip("mfu", why="no throughput")
            return
        audio_per_s = statistics.median(steady)
        self.rows.append(Row("throughput", f"median of {len(steady)} log windows",
                             f"{audio_per_s:.0f} audio s/s", audio_per_s > 0))
        from unispeech_platform.runtime.flops import mfu, peak_for

        peak = peak_for(gpu_name)
        if flops is None or peak is None:
            why = "no FLOP count" if flops is None else f"no peak known for {gpu_name}"
            self.rows.append(Row("mfu", why, "", None))
            return
        util = mfu(audio_per_s, flops, peak)
        self.rows.append(Row("mfu", f"vs {peak / 1e12:.0f} TFLOP/s dense bf16 ({gpu_name})",
                             f"{100 * util:.1f}%", 0 < util < 1))

    def finetune_row(self, text: str, log: str, seconds: float) -> None:
        run_id = run_id_from(text)
        per = metric_history(self.plan.tracking_uri, run_id, "dev_per") if run_id else []
        value = f"dev PER {100 * per[-1][1]:.1f}%" if per else "no dev_per logged"
        ok = bool(per) and math.isfinite(per[-1][1])
        self.rows.append(Row("finetune", f"CTC, {self.plan.finetune_steps} updates, {seconds:.0f} s", value, ok, log))

    def evaluate_row(self, log: str, seconds: float) -> None:
        path = self.plan.eval_dir / "per.json"
        try:
            scores = json.loads(path.read_text())["scores"]
            avg = next(s["per"] for s in scores if s["lang"] == "avg")
        except (OSError, KeyError, StopIteration, ValueError) as e:
            self.rows.append(Row("evaluate", f"no PER in {path}", type(e).__name__, False, log))
            return
        self.rows.append(Row("evaluate", f"1 GPU actor, {seconds:.0f} s", f"test PER {100 * avg:.1f}% (avg)",
                             math.isfinite(avg), log))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print the commands and the pretraining config, run nothing")
    p.add_argument("--workdir", default=None, help="where corpus, runs, MLflow store and logs go (default: a temp dir)")
    p.add_argument("--steps", type=int, default=60, help="pretraining updates")
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of all steps together")
    p.add_argument("--optimizer", choices=("auto", "fused", "torch"), default="auto",
                   help="DeepSpeed FusedAdam (needs nvcc) or torch AdamW; auto = fused when nvcc is found")
    a = p.parse_args(argv)
    if a.workdir:
        workdir = Path(a.workdir).resolve()
    elif a.dry_run:
        workdir = Path(tempfile.gettempdir()) / "unispeech-gpu-check"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="unispeech-gpu-check-"))
    torch_adam = a.optimizer == "torch" or (a.optimizer == "auto" and not nvcc_available())
    plan = Plan(workdir, steps=a.steps, torch_adam=torch_adam)

    if a.dry_run:
        print(f"# commands (run in {REPO})")
        for name, cmd in plan.commands().items():
            print(f"{name}: {shlex.join(cmd)}")
        from unispeech_platform.config import ConfigError, to_yaml

        try:
            configs = plan.configs()
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
        print(f"# pretraining config ({BASE_CONFIG} + overrides; finetune and evaluate configs validate too)")
        print(to_yaml(configs["pretrain"]), end="")
        return 0

    budget = Budget(a.budget_s)
    check = Check(plan, budget)
    try:
        check.run()
    except Exception as e:  # never lose the table
        check.rows.append(Row("check", f"crashed: {type(e).__name__}", str(e)[:80], False))
    print(render(check.rows))
    print(f"work dir: {workdir}")
    failed = [r for r in check.rows if r.ok is False]
    for r in failed:
        if r.log:
            print(f"\n--- {r.check}: last lines of {r.log}\n{tail(r.log)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
