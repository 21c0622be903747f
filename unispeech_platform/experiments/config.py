"""``python -m jobs.quickstart`` / ``python -m jobs.crosslingual`` config: the corpus, the arms, and the three
stage configs (ordinary pretrain / finetune / evaluate YAMLs plus overrides) every arm runs."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from unispeech_platform.config.base import Section
from unispeech_platform.config.names import SafeName
from unispeech_platform.config.sections import RaySection, TrackingSection
from unispeech_platform.data.synthetic import CLEAN_LANGS, ShiftedCondition

_SHIFTED = ShiftedCondition()  # the data layer's defaults: one place for the condition's numbers


class ShiftedTestSpec(Section):
    """An extra test split of the targets in a recording condition training never has (data/synthetic.py
    ShiftedCondition): the test texts re-spoken by other voices, rates and pitches, through a noisy telephone
    chain. Evaluation scores it beside ``test`` (docs/data.md#synthetic-corpus-extras)."""

    enabled: bool = False
    """Off by default: the corpus (and its arguments, so its reuse) stays as without it."""
    split: SafeName = _SHIFTED.split
    """Split name of the shifted rows; added to every arm's evaluate.splits."""
    voices: list[str] = Field(default_factory=lambda: list(_SHIFTED.voices), min_length=1)
    """espeak-ng voice variants none of the corpus voices use (m1-m8, f1-f5); test speaker k gets voices[k % n]."""
    speed: tuple[int, int] = _SHIFTED.speed
    """Speaking rate range in words per minute (corpus voices: 145-195)."""
    pitch: tuple[int, int] = _SHIFTED.pitch
    """espeak pitch range (corpus voices: 30-75)."""
    snr_db: tuple[float, float] | None = _SHIFTED.snr_db
    """Background-noise SNR range in dB; null: no noise."""
    noise_colour: str = _SHIFTED.noise_colour
    """white, pink or brown."""
    bandlimit_hz: tuple[float, float] | None = _SHIFTED.bandlimit_hz
    """(high-pass, low-pass) in Hz; null: full band."""
    codec: str | None = _SHIFTED.codec
    """mulaw (G.711), mp3, vorbis, opus, or null."""

    def condition(self) -> ShiftedCondition:
        """The data layer's ShiftedCondition (raises ValueError naming the field if it is malformed)."""
        cond = ShiftedCondition(self.split, tuple(self.voices), self.speed, self.pitch, self.snr_db, self.noise_colour,
                                self.bandlimit_hz, self.codec)
        cond.check()
        return cond


class CorpusSpec(Section):
    """Two synthetic espeak-ng corpora sharing one phone vocabulary: labeled high-resource languages for
    pretraining, low-resource targets (little labeled data) for fine-tuning and evaluation. Optionally
    unlabeled audio of the targets (and of other languages) in the pretraining corpus, and a shifted test split."""

    root: str = "data/quickstart"
    """Directory holding high/, low/ and the merged vocab.json; a complete corpus is reused on re-runs."""
    high_resource: list[str] = Field(default_factory=lambda: ["es", "it"])
    """Pretraining languages (espeak voices, all rows labeled)."""
    low_resource: list[str] = Field(default_factory=lambda: ["pt"])
    """Target languages: fine-tuned on their few labeled train rows, evaluated on held-out test speakers."""
    high_per_lang: int = Field(300, ge=8)
    """Utterances per high-resource language (all splits)."""
    low_per_lang: int = Field(60, ge=8)
    """Utterances per target language (all splits), dealt round-robin over its speakers."""
    speakers: int = Field(6, ge=3, le=13)
    """Voices per language (espeak has 13 variants): in the targets test_speakers test, dev_speakers dev, the
    rest train; in the high-resource corpus 1 test, 1 dev, the rest train."""
    test_speakers: int = Field(1, ge=1)
    """Target speakers held out for test (their rows: about low_per_lang * test_speakers / speakers)."""
    dev_speakers: int = Field(1, ge=1)
    """Target speakers held out for dev (model selection during fine-tuning)."""
    unlabeled_per_lang: int = Field(0, ge=0)
    """Unlabeled utterances (phones null) of each target and each unlabeled_langs language, added to the
    pretraining corpus (high/lang=<l>/split=train), spoken by voices that are none of the targets' dev/test
    speakers. Arms with a contrastive term learn from them; an arm with ctc_weight 1 reads labeled rows only
    (experiments/stages.py). 0: labeled pretraining only."""
    unlabeled_langs: list[str] = Field(default_factory=list)
    """Further languages (neither pretraining nor target) whose unlabeled audio joins pretraining."""
    shifted_test: ShiftedTestSpec = Field(default_factory=ShiftedTestSpec)
    """An extra, shifted test split of the targets (off by default)."""
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
        return _clean(v)

    @field_validator("unlabeled_langs")
    @classmethod
    def _known_unlabeled(cls, v: list[str]) -> list[str]:
        return _clean(v)

    @model_validator(mode="after")
    def _consistent(self) -> CorpusSpec:
        if self.speakers < self.test_speakers + self.dev_speakers + 1:
            raise ValueError(f"speakers={self.speakers} cannot cover test_speakers={self.test_speakers} + "
                             f"dev_speakers={self.dev_speakers} + at least 1 train speaker")
        if self.unlabeled_langs and not self.unlabeled_per_lang:
            raise ValueError("unlabeled_langs needs unlabeled_per_lang > 0")
        both = sorted(set(self.unlabeled_langs) & set(self.high_resource + self.low_resource))
        if both:
            raise ValueError(f"unlabeled_langs {both} are already pretraining or target languages (targets get "
                             "unlabeled_per_lang on their own)")
        if self.shifted_test.enabled:
            self.shifted_test.condition()
        return self

    def describe(self) -> str:
        """One line for a results page: what pretraining saw, the targets' speakers, the test conditions."""
        train = self.speakers - self.test_speakers - self.dev_speakers
        text = (f"synthetic espeak-ng, pretraining on {self.high_resource} ({self.high_per_lang} utterances each, "
                "all labeled)")
        if self.unlabeled_per_lang:
            text += f" + {self.unlabeled_per_lang} unlabeled utterances each of {self.unlabeled_languages()}"
        text += (f", targets {self.low_resource} ({self.low_per_lang} utterances each: {train} train speakers, "
                 f"{self.dev_speakers} dev, {self.test_speakers} test), {self.min_words}-{self.max_words} words per "
                 "utterance")
        if self.shifted_test.enabled:
            s = self.shifted_test
            text += (f"; shifted test split `{s.split}`: voices {s.voices}, {s.speed[0]}-{s.speed[1] - 1} wpm, "
                     f"pitch {s.pitch[0]}-{s.pitch[1] - 1}, noise {s.snr_db} dB SNR ({s.noise_colour}), band "
                     f"{s.bandlimit_hz} Hz, codec {s.codec}")
        return text

    def unlabeled_languages(self) -> list[str]:
        """The languages whose unlabeled audio joins pretraining: the targets, then unlabeled_langs."""
        return [*self.low_resource, *self.unlabeled_langs] if self.unlabeled_per_lang else []


def _clean(v: list[str]) -> list[str]:
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


class ContinuedStage(Section):
    """The authors' recipe for unlabeled target audio (microsoft/UniSpeech ``continue_pretrain.sh``): the arm's
    pretraining becomes two stages with the same total updates and batch budget as every other arm. Stage 1 is the
    arm's own objective on the labeled rows of the pretraining corpus; stage 2 continues from its model
    (pretrain.init_from) on the unlabeled target audio only, with ``overrides`` (contrastive only by default); the
    arm is fine-tuned from stage 2."""

    share: float = Field(0.3, gt=0.0, lt=1.0)
    """Share of pretrain's train.max_steps that stage 2 gets (rounded, at least 1 update each)."""
    overrides: dict[str, Any] = Field(default_factory=lambda: {"model.ctc_weight": 0.0})
    """Stage 2's pretraining overrides on top of the arm's (contrastive + diversity only by default)."""


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
    continued: dict[SafeName, ContinuedStage] = Field(default_factory=dict)
    """Arms (named in ``arms``) pretrained in two stages: labeled multitask, then contrastive-only continued
    pretraining on the unlabeled target audio (ContinuedStage; needs corpus.unlabeled_per_lang > 0)."""
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

    @model_validator(mode="after")
    def _continued_arms_exist(self) -> ExperimentConfig:
        exp = self.experiment
        unknown = sorted(set(exp.continued) - set(exp.arms))
        if unknown:
            raise ValueError(f"experiment.continued names {unknown}, which are not in experiment.arms {list(exp.arms)}")
        if exp.continued and not self.corpus.unlabeled_per_lang:
            raise ValueError("experiment.continued trains stage 2 on unlabeled target audio: set "
                             "corpus.unlabeled_per_lang > 0")
        return self
