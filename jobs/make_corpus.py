"""Synthesise an offline multilingual speech corpus with espeak-ng + wordfreq.

python -m jobs.make_corpus --out data/synth --langs en-us,es,fr --per-lang 300 --speakers 6 --seed 0

Exit status: 0 done (or reused), 2 bad flags (e.g. more --speakers than espeak-ng has variants), 3 a missing
tool, word list or voice, an --out that cannot be written or holds a corpus made with other flags
(--overwrite replaces it); each named in one line before any audio is made.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from unispeech_platform.data.synthetic import CLEAN_LANGS, SynthesisSpec, make_corpus, synthesis_args
from unispeech_platform.runtime.cli import (
    exit_with,
    finite_float,
    non_negative_int,
    positive_int,
    run_or_exit,
)
from unispeech_platform.runtime.errors import EXIT_CONFIG
from unispeech_platform.runtime.output_parent import check_output_parent


def comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    # Each option's dest is a SynthesisSpec field, and its default is that field's: the spec is declared once.
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--seed", type=non_negative_int, default=SynthesisSpec.seed)
    p.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a corpus made with other arguments, or write into a non-empty directory this job "
                        "did not make (only what the job made is ever removed: docs/data.md#where-a-job-writes)")
    a = p.parse_args(argv)
    spec = {f.name: getattr(a, f.name) for f in fields(SynthesisSpec) if hasattr(a, f.name)}
    try:
        synthesis_args(**spec)  # the flags' values (speakers, fractions, word counts): exit 2 naming the value
    except ValueError as e:
        exit_with(f"bad flags: {e}", EXIT_CONFIG)
    run_or_exit(check_output_parent, a.out, "--out", makes_parents=True, is_file=False)
    run_or_exit(make_corpus, a.out, workers=a.workers, overwrite=a.overwrite, **spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
