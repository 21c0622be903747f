"""Synthesise an offline multilingual speech corpus with espeak-ng + wordfreq.

python -m jobs.make_corpus --out data/synth --langs en-us,es,fr --per-lang 300 --speakers 6 --seed 0
"""

from __future__ import annotations

import argparse

from unispeech_platform.data.synthetic import CLEAN_LANGS, make_corpus


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="corpus root directory")
    p.add_argument(
        "--langs",
        default="en-us,es",
        help=f"comma-separated espeak voices; clean ones: {','.join(CLEAN_LANGS)}",
    )
    p.add_argument("--per-lang", type=int, required=True, help="utterances per language (all splits)")
    p.add_argument("--speakers", type=int, default=6, help="voices per language (espeak variants, max 13)")
    p.add_argument("--dev-speakers", type=int, default=1, help="speakers per language held out for dev")
    p.add_argument("--test-speakers", type=int, default=1, help="speakers per language held out for test")
    p.add_argument("--unlabeled-fraction", type=float, default=0.0, help="train rows stored without phones")
    p.add_argument("--min-words", type=int, default=4, help="shortest text (2-4 words give ~1-2 s clips)")
    p.add_argument("--max-words", type=int, default=10, help="longest text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace a corpus made with other arguments")
    a = p.parse_args(argv)
    make_corpus(
        a.out,
        [x.strip() for x in a.langs.split(",") if x.strip()],
        a.per_lang,
        speakers=a.speakers,
        dev_speakers=a.dev_speakers,
        test_speakers=a.test_speakers,
        unlabeled_fraction=a.unlabeled_fraction,
        seed=a.seed,
        min_words=a.min_words,
        max_words=a.max_words,
        workers=a.workers,
        overwrite=a.overwrite,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
