"""A model card (``README.md`` in the export): what the model was trained on, for what, how well, and how to
use it. Hugging Face Hub metadata sits in the YAML front matter, so the directory can be pushed as it is.

The platform fills a ``ModelCard`` (it knows the job); this module only renders it, so the text stays the same
wherever a model is exported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

CARD_NAME = "README.md"

OBJECTIVES = {
    "pretrain": "UniSpeech multitask pretraining: contrastive loss on quantized latents plus phone CTC on the "
                "labeled rows (the encoder is the product; fine-tune it before transcribing).",
    "ctc": "Phone recognition: CTC fine-tuning of a pretrained UniSpeech encoder (greedy decoding, blank = <pad>).",
    "lid": "Spoken language identification: a classification head on a pretrained UniSpeech encoder.",
}


@dataclass
class ModelCard:
    """What the card says. ``metrics`` are the dev scores at the exported update (name -> value, e.g.
    ``dev_per``); ``per_by_language`` a PER table when one is known (language -> PER)."""

    name: str
    task: str
    data: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    per_by_language: dict[str, float] = field(default_factory=dict)
    command: str | None = None
    base_model: str | None = None


def _front_matter(card: ModelCard) -> list[str]:
    lines = ["---", "library_name: transformers"]
    if card.task == "ctc":
        lines.append("pipeline_tag: automatic-speech-recognition")
    elif card.task == "lid":
        lines.append("pipeline_tag: audio-classification")
    if card.languages:
        lines += ["language:"] + [f"- {json.dumps(lang)}" for lang in card.languages]
    lines += ["tags:", "- unispeech", f"- {card.task}", "---", ""]
    return lines


def _results(card: ModelCard) -> list[str]:
    lines = ["## Results", ""]
    at = f" at update {card.step}" if card.step is not None else ""
    if card.per_by_language:
        lines += [f"PER per language on the dev split{at}:", "", "| language | PER |", "|---|---|"]
        lines += [f"| {lang} | {per:.2%} |" for lang, per in sorted(card.per_by_language.items())]
        lines.append("")
    if card.metrics:
        lines += [f"Dev split{at}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(card.metrics.items())]
    elif not card.per_by_language:
        lines.append("Not known: the job had no dev split (score it with `python -m jobs.evaluate`).")
    return lines + [""]


def _usage(card: ModelCard) -> list[str]:
    if card.task != "ctc":
        return []
    return [
        "## Use", "",
        "```python",
        "from transformers import pipeline",
        'asr = pipeline("automatic-speech-recognition", model="path/to/this/directory")',
        'print(asr(waveform_16khz)["text"])  # a numpy float array at 16 kHz: space-separated phones',
        "```", "",
        "or `python -m jobs.transcribe --model path/to/this/directory --out out.jsonl AUDIO...`.", "",
    ]


def render_model_card(card: ModelCard) -> str:
    lines = _front_matter(card) + [f"# {card.name}", ""]
    if card.base_model:
        lines += [f"Fine-tuned from `{card.base_model}`.", ""]
    lines += ["## Objective", "", OBJECTIVES.get(card.task, card.task), "", "## Data", ""]
    lines += [f"- {item}" for item in card.data] or ["- not recorded"]
    lines += [""] + _results(card)
    if card.command:
        lines += ["## Command", "", "```bash", card.command, "```", ""]
    return "\n".join(lines + _usage(card))


def write_model_card(directory: str | Path, card: ModelCard) -> Path:
    path = Path(directory) / CARD_NAME
    path.write_text(render_model_card(card), encoding="utf-8")
    return path
