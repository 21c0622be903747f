"""Evaluation outputs: the PER table as Markdown / CSV / JSON, a bar chart, per-utterance predictions, and the
LID confusion matrix. Everything lands in one directory that is logged to MLflow as is."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from unispeech_platform.evaluate.scoring import MACRO, WEIGHTED, Score
from unispeech_platform.runtime.output_paths import OutputDir

COLUMNS = ("split", "lang", "utterances", "ref_phones", "PER %", "sub %", "del %", "ins %", "CER %", "WER %",
           "OOV phones", "dropped")
LEGEND = ("PER: jiwer's error rate over the model's tokens against the corpus `phones` (sub/del/ins per reference "
          "token). CER / WER: jiwer's character / word error rate of the decoded text against the corpus `text` "
          "(lower-cased, punctuation removed), only for character models (vocabulary with `|`); `–` = not "
          "meaningful or no text. OOV phones: reference phones outside the model's vocabulary (scored as errors).")
TABLE_MD, TABLE_CSV, TABLE_JSON, CHART, PREDICTIONS = "per.md", "per.csv", "per.json", "per.png", "predictions.jsonl"
REFERENCE_VOCAB = "reference_vocab.json"
CONVERTED = ("model", "model/model.safetensors", "model/config.json", "model/vocab.json")
"""What an evaluation writes besides its report when it converts a training checkpoint (model_source)."""
LID_FILES = ("lid.json", PREDICTIONS, "confusion.png")


def _earlier_report(root: Path, name: str, keys: tuple[str, ...], made: tuple[str, ...]) -> set[str] | None:
    """The files an earlier version (no marker) wrote when ``root/name`` is its JSON report holding ``keys``."""
    try:
        doc = json.loads((root / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return set(made) if isinstance(doc, dict) and all(k in doc for k in keys) else None


def per_report_made(root: Path) -> set[str] | None:
    """An evaluation directory of an earlier version, recognised by its per.json (runtime/output_paths.py)."""
    return _earlier_report(root, TABLE_JSON, ("model", "scores"),
                           (TABLE_MD, TABLE_CSV, TABLE_JSON, CHART, PREDICTIONS, REFERENCE_VOCAB, *CONVERTED))


def lid_report_made(root: Path) -> set[str] | None:
    """A LID report directory of an earlier version, recognised by its lid.json."""
    return _earlier_report(root, LID_FILES[0], ("accuracy", "labels"), LID_FILES)


def _cells(s: Score) -> list[str]:
    name = {MACRO: "avg (macro)", WEIGHTED: "avg (utt-weighted)"}.get(s.lang, s.lang)
    pct = [f"{100 * v:.2f}" if v is not None else "–" for v in (s.per, s.sub, s.dele, s.ins, s.cer, s.wer)]
    oov = f"{s.oov_phones} ({s.oov_list})" if s.oov_phones else "0"
    return [s.split, name, str(s.utterances), str(s.ref_phones), *pct, oov, str(s.dropped)]


def markdown_table(scores: list[Score]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cells(s)) + " |" for s in scores]
    return "\n".join(lines) + "\n"


def per_chart(scores: list[Score], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = sorted({s.split for s in scores})
    fig, axes = plt.subplots(1, len(splits), figsize=(max(5, 1.2 * len(scores)), 4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        rows = [s for s in scores if s.split == split]
        langs = [s for s in rows if s.lang not in (MACRO, WEIGHTED)]
        ax.bar([s.lang for s in langs], [100 * s.per for s in langs], color="tab:blue")
        for s, style in ((r, st) for r in rows for name, st in ((MACRO, "--"), (WEIGHTED, ":")) if r.lang == name):
            ax.axhline(100 * s.per, color="tab:red", linestyle=style, label=f"{s.lang} {100 * s.per:.1f}%")
        ax.set_title(f"{split}")
        ax.set_ylabel("PER %")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_per_report(scores: list[Score], predictions, out: OutputDir, model_path: str) -> Path:
    """Write per.md, per.csv, per.json, per.png and predictions.jsonl into the evaluation's output directory,
    each name claimed there first (never a file the job did not make: runtime/output_paths.py)."""
    out.claim(TABLE_MD).write_text(f"PER of `{model_path}`\n\n{LEGEND}\n\n" + markdown_table(scores),
                                   encoding="utf-8")
    with open(out.claim(TABLE_CSV), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(scores[0].as_dict()))
        writer.writeheader()
        writer.writerows(s.as_dict() for s in scores)
    out.claim(TABLE_JSON).write_text(
        json.dumps({"model": model_path, "scores": [s.as_dict() for s in scores]}, indent=1), encoding="utf-8"
    )
    predictions.to_json(out.claim(PREDICTIONS), orient="records", lines=True, force_ascii=False)
    per_chart(scores, out.claim(CHART), f"PER of {model_path}")
    return out.root


def confusion_plot(labels: list[str], matrix: list[list[int]], path: Path, title: str) -> Path:
    """Rows: true language, columns: predicted; counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(r) for r in matrix) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color="white" if matrix[i][j] > top / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
