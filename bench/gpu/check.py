"""The check itself: hardware, parity, corpus, model FLOPs, pretraining (throughput, MFU), fine-tuning and
evaluation in that order, each adding its rows; a step whose dependency failed is a SKIP row, not a lost
table."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from unispeech_platform.train.phase_clock import PHASES

from .parity import base_model_config, hardware_row, parity_rows
from .plan import Plan
from .readback import mean_train_clip_seconds, metric_history, run_id_from
from .runner import Budget, run_logged, status
from .table import Row


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

    ROWS = ("hardware", "parity UniSpeechForPreTraining", "parity UniSpeechForCTC", "corpus", "model flops",
            "optimizer", "pretrain", "throughput", "mfu", "mfu (job)", "time_share", "finetune", "evaluate")
    """The table's rows, in order (--dry-run lists them)."""

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
            self.skip("throughput", "mfu", "mfu (job)", "time_share", "finetune", "evaluate",
                      why="pretraining failed")
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
        else:
            util = mfu(audio_per_s, flops, peak)
            self.rows.append(Row("mfu", f"vs {peak / 1e12:.0f} TFLOP/s dense bf16 ({gpu_name})",
                                 f"{100 * util:.1f}%", 0 < util < 1))
        self.job_breakdown_rows(uri, run_id)

    def job_breakdown_rows(self, uri: str, run_id: str) -> None:
        """What the job itself logged (train/phase_clock.py): its perf/mfu and its step-time breakdown, the median
        over the log windows after the first (warm-up)."""
        def steady(key: str) -> float | None:
            values = [v for _, v in metric_history(uri, run_id, key)]
            values = values[1:] or values
            return statistics.median(values) if values else None

        job_mfu = steady("perf/mfu")
        self.rows.append(Row("mfu (job)", "perf/mfu as the run logged it",
                             "not logged" if job_mfu is None else f"{100 * job_mfu:.1f}%",
                             None if job_mfu is None else 0 < job_mfu < 1))
        shares = {p: steady(f"time_share/{p}") for p in (*PHASES, "other")}
        logged = {p: v for p, v in shares.items() if v is not None}
        top = sorted(logged.items(), key=lambda kv: -kv[1])
        self.rows.append(Row("time_share", "median share of wall time per phase (largest first)",
                             ", ".join(f"{p} {100 * v:.0f}%" for p, v in top) or "not logged",
                             abs(sum(logged.values()) - 1) < 0.05 if logged else False))

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
