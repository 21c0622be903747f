"""(No Ray) The experiment's own directory as --resume reads it: a finished arm and seed round-trips through its
result file and predictions, an unfinished one is not mistaken for finished, the config check names the key that
changed, and clearing an unfinished arm touches only its own stage directories. The end-to-end stop and resume
is tests/test_crosslingual.py (with Ray)."""

from __future__ import annotations

import json

import pytest
from evaluate_helpers import ROOT

from unispeech_platform.evaluate.scoring import Score
from unispeech_platform.experiments.pretrain_health import PretrainHealth
from unispeech_platform.experiments.report import ArmResult
from unispeech_platform.experiments.statistics import read_utterance_errors
from unispeech_platform.experiments.storage import (
    MARKER,
    check_resumable,
    claim_storage,
    clear_arm,
    load_arm_result,
    save_arm_result,
)
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.hardware import detect_hardware, machine_line


def _cfg(tmp_path, *sets: str):
    from unispeech_platform.config import load_config
    from unispeech_platform.experiments.config import ExperimentConfig

    return load_config(ExperimentConfig, ROOT / "configs" / "crosslingual_tiny.yaml",
                       [f"experiment.storage_path={tmp_path / 'runs'}", *sets])


def _predictions(path):
    rows = [{"id": "pt-1", "lang": "pt", "split": "test", "ref": "a b c d", "hyp": "a x c", "error": None},
            {"id": "pt-2", "lang": "pt", "split": "test", "ref": "e f", "hyp": "e f", "error": None},
            {"id": "pt-3", "lang": "pt", "split": "test", "ref": "g", "hyp": "", "error": "unreadable audio"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_finished_arm_round_trips_and_an_unfinished_one_is_not_found(tmp_path):
    cfg = _cfg(tmp_path)
    root = claim_storage(cfg, overwrite=False)
    assert (root / MARKER).is_file()
    predictions = _predictions(tmp_path / "predictions.jsonl")
    score = Score("test", "pt", utterances=2, ref_phones=6, per=33.3, sub=16.7, dele=16.7, ins=0.0)
    health = PretrainHealth(chance=3.04, last_step=650, contrastive_end=2.5, first_below=300, accuracy_end=0.3,
                            code_perplexity={325: 40.0, 650: 60.0}, lowest_perplexity=(100, 4.0),
                            states={"starved_contrastive": 75})
    result = ArmResult("unispeech", [score], {"pretrain": 12.5, "finetune": 7.0}, "run123", 1, "unispeech-s1",
                       read_utterance_errors(predictions), health={"pretrain": health})
    save_arm_result(root, result)

    back = load_arm_result(root, "unispeech-s1", predictions)
    assert back is not None
    assert (back.name, back.seed, back.label, back.run_id, back.seconds) == \
           ("unispeech", 1, "unispeech-s1", "run123", {"pretrain": 12.5, "finetune": 7.0})
    assert back.scores == [score]
    edits = back.utterances["test"]["pt"]
    assert edits.ids == ("pt-1", "pt-2") and edits.edits.tolist() == [2, 0] and edits.ref_phones.tolist() == [4, 2]
    assert back.machine == machine_line()  # recorded where it ran: a --resume may join several machines' runs
    assert back.health == {"pretrain": health}  # a --resume's report keeps each seed's health row
    assert load_arm_result(root, "unispeech-s2", predictions) is None


def test_the_machine_line_names_what_a_speed_depends_on():
    facts = detect_hardware()
    line = machine_line()
    assert line.startswith(facts.cpu_model) and f"{facts.cpu_count} core" in line and "torch " in line
    if facts.has_native_cpu_bf16:  # the flag that makes `precision: auto` pick bf16 is named
        assert "flags: no " not in line and any(f in line for f in facts.cpu_flags if f.endswith("_bf16"))
    else:
        assert "flags: no " in line


def test_resume_needs_the_marker_and_names_the_changed_key(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(JobSetupError, match="no experiment.json"):
        check_resumable(cfg)
    root = claim_storage(cfg, overwrite=False)
    assert check_resumable(cfg)[0] == root
    assert check_resumable(_cfg(tmp_path, "tracking.experiment=elsewhere"))[0] == root  # where MLflow is: free
    with pytest.raises(JobSetupError, match=r"finetune\.overrides\.train\.max_steps"):
        check_resumable(_cfg(tmp_path, "finetune.overrides.train.max_steps=3"))


def test_clearing_an_unfinished_arm_removes_only_its_stage_directories(tmp_path):
    root = claim_storage(_cfg(tmp_path), overwrite=False)
    for name in ("unispeech-s0-pretrain", "unispeech-s0-finetune", "unispeech-s0-eval", "unispeech-s1-pretrain",
                 "supervised-s0-pretrain"):
        (root / name).mkdir()
        (root / name / "weights").write_bytes(b"x")
    (root / "unispeech-s0-result.json").write_text("{}")
    clear_arm(root, "unispeech-s0")
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [MARKER, "unispeech-s1-pretrain", "supervised-s0-pretrain", "unispeech-s0-result.json"])


def test_the_timing_table_runs_in_pipeline_order_and_marks_a_stage_a_run_lacks():
    """A two-stage arm's continued stage sits after pretraining even when a one-stage arm comes first, and a run
    without it shows "—", not 0 seconds."""
    from unispeech_platform.experiments.report import timing_table

    one = ArmResult("unispeech", [], {"pretrain": 320.4, "finetune": 210.0, "evaluate": 14.0}, label="unispeech-s0")
    two = ArmResult("two", [], {"pretrain": 175.0, "continued": 161.2, "finetune": 212.0, "evaluate": 14.0},
                    label="two-s0")
    assert timing_table([one, two]).splitlines() == [
        "| run | pretrain (s) | continued (s) | finetune (s) | evaluate (s) |",
        "|---|---|---|---|---|",
        "| unispeech-s0 | 320 | — | 210 | 14 |",
        "| two-s0 | 175 | 161 | 212 | 14 |",
    ]
