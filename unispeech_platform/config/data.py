"""``DataConfig``: the ``data:`` section of the training and evaluation job configs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unispeech_core.tokenizer import VOCAB_NAME
from unispeech_platform.config.augment import AugmentConfig


class DataConfig(BaseModel):
    """Where the corpus is, which part of it to read, and how to batch it. Validated before Ray starts."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str = Field(
        description="Corpus root: lang=<code>/split=<name>/part-NNNNN.parquet plus vocab.json. A local path or any "
        "URI pyarrow's filesystems accept (s3://, gs://, file://; docs/data.md#object-storage)."
    )
    vocab_path: str | None = Field(
        default=None, description="Phone vocabulary (vocab.json, a path or URI); default: <path>/vocab.json."
    )
    langs: list[str] | None = Field(
        default=None, description="Languages (lang= partitions) to read; None reads every language present."
    )
    train_splits: list[str] = Field(default=["train"], description="split= partitions used for training.")
    eval_splits: list[str] = Field(default=["dev"], description="split= partitions used for evaluation.")
    labeled_only: bool = Field(
        default=False,
        description="Skip rows without phones (fine-tuning); filtered before any decoding.",
    )
    min_duration_s: float = Field(
        default=0.0, ge=0.0, description="Drop (and count) rows shorter than this, judged from num_samples."
    )
    max_duration_s: float = Field(
        default=20.0, gt=0.0, description="Drop (and count) rows longer than this, judged from num_samples."
    )
    max_batch_seconds: float = Field(
        default=80.0,
        gt=0.0,
        description="Budget of padded audio per batch: batch size x longest row (after cropping), in seconds.",
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="Most utterances per batch, whatever their length."
    )
    crop_seconds: float | None = Field(
        default=None,
        gt=0.0,
        description="Training only: randomly crop longer rows to this length (deterministic per seed, epoch, id). "
        "Labeled rows are left whole unless crop_labeled, since a crop no longer matches its transcript.",
    )
    crop_labeled: bool = Field(
        default=False,
        description="Crop labeled rows too; a cropped labeled row is then delivered as unlabeled (labels -100).",
    )
    lang_sampling_alpha: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Training only: language-balanced sampling p_l ~ (n_l/N)^alpha over hours (XLSR uses 0.5; "
        "0 = uniform over languages, None or 1 = natural). Rows are repeated or skipped per epoch.",
    )
    labeled_share: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Training only: every batch holds this share of labeled rows (within one row), whatever the "
        "corpus holds: the scarcer kind's rows are reused within a shuffle pool (docs/data.md#labeled-share). "
        "None = the rows' own mix.",
    )
    seed: int = Field(
        default=0, ge=0, lt=2**32, description="Seeds shuffling, cropping and language sampling (with the epoch)."
    )
    shuffle_buffer_rows: int = Field(
        default=512,
        ge=1,
        description="Rows pooled on each worker before they are shuffled, sorted by length and cut into batches: "
        "larger pools give tighter length buckets and better shuffling, at the cost of memory.",
    )
    read_piece_rows: int = Field(
        default=64,
        ge=1,
        description="Rows per piece (consecutive row groups of a part) that training reads in a shuffled order, "
        "so every worker's pool mixes all parts (languages, labeled and unlabeled); a row group larger than this "
        "is one piece. Keep it well below shuffle_buffer_rows.",
    )
    read_parallelism: int | None = Field(
        default=None,
        ge=1,
        description="Read tasks (Ray Data override_num_blocks); None = one task per Parquet part.",
    )
    decode_concurrency: int | None = Field(
        default=None, ge=1, description="Most concurrent decode tasks; None lets Ray Data scale to free CPUs."
    )
    decode_batch_rows: int = Field(
        default=32, ge=1, description="Rows per decode call, so per decoded block a worker fetches."
    )
    prefetch_batches: int = Field(
        default=4, ge=0, description="Decoded row blocks each worker fetches ahead."
    )
    preserve_order: bool = Field(
        default=True,
        description="Deliver blocks in file order, so the same seed gives the same batches (slightly slower).",
    )
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig,
        description="Training-only audio augmentation: speed, reverberation, noise, band limit, codec "
        "(docs/data.md#augmentation); off by default.",
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError(
                f"min_duration_s ({self.min_duration_s}) must be < max_duration_s ({self.max_duration_s})"
            )
        if self.max_duration_s > self.max_batch_seconds:
            raise ValueError(
                f"max_duration_s ({self.max_duration_s}) exceeds max_batch_seconds ({self.max_batch_seconds}): "
                "the longest rows could never fit a batch"
            )
        return self

    def resolved_vocab_path(self) -> str:
        """vocab_path, else vocab.json in the corpus root (a URI's query, e.g. endpoint_override, is kept)."""
        return self.vocab_path if self.vocab_path else join_path(self.path, VOCAB_NAME)


def join_path(root: str, name: str) -> str:
    """``root/name`` for a local path or a URI; a URI's ``?query`` stays at the end."""
    base, sep, query = root.partition("?") if "://" in root else (root, "", "")
    return f"{base.rstrip('/')}/{name}{sep}{query}"
