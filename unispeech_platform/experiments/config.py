"""``python -m jobs.quickstart`` / ``python -m jobs.crosslingual`` config: the corpus, the arms, and the three
stage configs (ordinary pretrain / finetune / evaluate YAMLs plus overrides) every arm runs."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from unispeech_platform.config.base import Section
from unispeech_platform.config.names import SafeName
from unispeech_platform.config.sections import RaySection, TrackingSection
from unispeech_platform.data.synthetic import CLEAN_LANGS


class CorpusSpec(Section):
    """Two synthetic espeak-ng corpora sharing one phone vocabulary: labeled high-resource languages for
    pretraining, low-resource targets (little labeled data) for fine-tuning and evaluation."""

    root: str = "data/quickstart"
    """Directory holding high/, low/ and the merged vocab.json; a complete corpus is reused on re-runs."""
    high_resource: list[str] = Field(default_factory=lambda: ["es", "it"])
    """Pretraining languages (espeak voices, all rows labeled)."""
    low_resource: list[str] = Field(default_factory=lambda: ["pt"])
    """Target languages: fine-tuned on their few labeled train rows, evaluated on held-out test speakers."""
    high_per_lang: int = Field(300, ge=8)
    """Utterances per high-resource language (all splits)."""
    low_per_lang: int = Field(60, ge=8)
    """Utterances per target language (all splits)."""
    speakers: int = Field(6, ge=3)
    """Voices per language: 1 test, 1 dev, the rest train."""
    min_words: int = Field(2, ge=1)
    """Shortest text (2-4 words give ~1-2 s clips: fast steps)."""
    max_words: int = Field(4, ge=1)
    """Longest text."""
    seed: int = 0
    """Seed of texts, voices and splits."""

    @field_validator("high_resource", "low_resource")
    @classmethod
    def _known_voices(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one language")
        odd = [x for x in v if x not in CLEAN_LANGS]
        if odd:
            raise ValueError(f"{odd}: not among the languages with clean espeak IPA {list(CLEAN_LANGS)}")
        return v


class StageSpec(Section):
    """One stage: an existing job YAML plus dotted-key overrides (data paths, names, tracking are set by the
    experiment)."""

    config: str
    """The stage's job YAML (configs/tiny.yaml, configs/finetune_tiny.yaml, configs/evaluate_tiny.yaml, ...)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted keys -> values applied on top of it for every arm."""


class ExperimentSection(Section):
    """Names, storage and the arms."""

    name: SafeName = "quickstart"
    """Experiment name, one safe directory name (config/names.py): run directories live in <storage_path>/<name>.
    A re-run refuses to replace them unless --overwrite is given."""
    storage_path: str = "runs/experiments"
    """Where pretraining/fine-tuning checkpoints, exports and evaluation outputs go."""
    arms: dict[SafeName, dict[str, Any]] = Field(
        default_factory=lambda: {"unispeech": {"model.ctc_weight": 0.5, "model.replace_prob": 0.5}}
    )
    """Arm name (a safe directory name: its runs are <arm>-pretrain, <arm>-finetune; with several seeds
    <arm>-s<seed>-pretrain, ...) -> pretraining overrides. Every arm gets the same data, steps and fine-tuning."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Every arm is pretrained, fine-tuned and evaluated once per seed, each run with train.seed and data.seed
    of both training stages set to it (initial weights, masks, negatives, batch order, crops); the corpus is the
    same for all. The table shows mean +- sd over seeds (experiments/statistics.py)."""
    reference_arm: str | None = None
    """Arm whose relative PER reduction vs every other arm is reported (None: the last arm)."""
    init_ctc_head: bool = True
    """Start the fine-tuning CTC head (lm_head) from the pretraining CTC head (ctc_proj): both predict the
    same merged phone vocabulary. An arm pretrained without CTC (ctc_weight 0) thus starts from a random head."""
    results_path: str | None = None
    """Also write the results Markdown into this file (e.g. docs/results.md), between the markers
    <!-- BEGIN GENERATED: <name> --> and <!-- END GENERATED: <name> --> (appended if missing); the rest of the
    file is left alone (experiments/results_block.py)."""

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"{v}: give distinct seeds >= 0")
        return v

    def run_label(self, arm: str, seed: int) -> str:
        """Name of one arm's runs for one seed: the arm itself with a single seed, <arm>-s<seed> otherwise."""
        return arm if len(self.seeds) == 1 else f"{arm}-s{seed}"


class ExperimentConfig(Section):
    """The whole experiment; every stage config of every arm is validated before Ray starts."""

    experiment: ExperimentSection = Field(default_factory=ExperimentSection)
    """Names, storage, arms."""
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)
    """The synthetic corpora."""
    pretrain: StageSpec
    """Pretraining job config (python -m jobs.pretrain YAML)."""
    finetune: StageSpec
    """CTC fine-tuning job config (python -m jobs.finetune YAML)."""
    evaluate: StageSpec
    """Evaluation job config (python -m jobs.evaluate YAML)."""
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    """MLflow: one parent run, a child run per arm, pretrain/finetune runs nested under their arm."""
    ray: RaySection = Field(default_factory=RaySection)
    """How to reach or start Ray (shared by all stages)."""
