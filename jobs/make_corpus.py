"""Synthesise an offline multilingual speech corpus with espeak-ng + wordfreq.

Exit status: 0 done (or reused), 2 bad flags (e.g. more --speakers than espeak-ng has variants), 3 a missing
tool, word list or voice, an --out that cannot be written or holds a corpus made with other flags
(--overwrite replaces it); each named in one line before any audio is made.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from unispeech_platform.data.synthetic import CLEAN_LANGS, SynthesisSpec, make_corpus, synthesis_args
from unispeech_platform.runtime.cli import (
    comma_list,
    exit_with,
    finite_float,
    non_negative_int,
    positive_int,
    run_or_exit,
)
from unispeech_platform.runtime.errors import EXIT_CONFIG
from unispeech_platform.runtime.job_flags import add_corpus_overwrite_flag, flags_parser, start_flags_job
from unispeech_platform.runtime.output_parent import check_output_parent

EXAMPLES = (
    "--out data/synth --langs en-us,es,fr --per-lang 300 --speakers 6 --seed 0",
    "--out data/small --per-lang 40 --speakers 3 --unlabeled-fraction 0.5 --workers 2 --no-progress",
)


def parser() -> argparse.ArgumentParser:
    """Each option's dest is a SynthesisSpec field, and its default is that field's: the spec is declared once."""
    p = flags_parser(__doc__, EXAMPLES)
    p.add_argument("--out", required=True, help="corpus root directory")
    p.add_argument("--langs", type=comma_list, default="en-us,es",
                   help=f"comma-separated espeak voices; clean ones: {','.join(CLEAN_LANGS)}")
    p.add_argument("--per-lang", type=positive_int, required=True, help="utterances per language (all splits)")
    p.add_argument("--speakers", type=positive_int, default=SynthesisSpec.speakers,
                   help="voices per language (espeak variants, max 13)")
    p.add_argument("--dev-speakers", type=non_negative_int, default=SynthesisSpec.dev_speakers,
                   help="speakers per language held out for dev")
    p.add_argument("--test-speakers", type=non_negative_int, default=SynthesisSpec.test_speakers,
                   help="speakers per language held out for test")
    p.add_argument("--unlabeled-fraction", type=finite_float, default=SynthesisSpec.unlabeled_fraction,
                   help="train rows stored without phones")
    p.add_argument("--min-words", type=positive_int, default=SynthesisSpec.min_words,
                   help="shortest text (2-4 words give ~1-2 s clips)")
    p.add_argument("--max-words", type=positive_int, default=SynthesisSpec.max_words, help="longest text")
    p.add_argument("--seed", type=non_negative_int, default=SynthesisSpec.seed,
                   help="texts, voices and held-out speakers: the same seed makes the same corpus")
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    add_corpus_overwrite_flag(p)
    return p


def spec_of(a: argparse.Namespace) -> dict[str, Any]:
    """The SynthesisSpec fields among the flags."""
    return {f.name: getattr(a, f.name) for f in fields(SynthesisSpec) if hasattr(a, f.name)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked without touching anything (exit 2 naming a bad value)."""
    a = parser().parse_args(argv)
    try:
        synthesis_args(**spec_of(a))  # the flags' values (speakers, fractions, word counts): exit 2 naming the value
    except ValueError as e:
        exit_with(f"bad flags: {e}", EXIT_CONFIG)
    return a


def main(argv: list[str] | None = None) -> int:
    a = start_flags_job(parser(), parse(argv))
    run_or_exit(check_output_parent, a.out, "--out", makes_parents=True, is_file=False)
    run_or_exit(make_corpus, a.out, workers=a.workers, overwrite=a.overwrite, progress=not a.no_progress,
                **spec_of(a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
