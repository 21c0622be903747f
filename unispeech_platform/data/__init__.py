"""Audio corpora in Parquet: layout and writers, corpus builders (espeak-ng synthesis, Common Voice import),
the validator, and the Ray Data pipeline that feeds training and evaluation. See docs/data.md."""
