"""Importers of the data users have (Hugging Face Parquet, manifests, fairseq, Kaldi) into the corpus layout."""

from __future__ import annotations

from . import fairseq, hf, kaldi, manifest

READERS = {"hf": hf.read_records, "manifest": manifest.read_records, "fairseq": fairseq.read_records,
           "kaldi": kaldi.read_records}
