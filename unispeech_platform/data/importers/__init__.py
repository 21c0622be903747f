"""Importers of the data users have (Hugging Face Parquet, manifests, fairseq, Kaldi, Common Voice releases) into
the corpus layout: one reader per source layout turns its files into records (``hf``, ``manifest``, ``fairseq``,
``kaldi``, ``commonvoice``); ``common`` converts a record into a corpus row, ``g2p`` labels it, ``executors``
runs the conversion (a local process pool or Ray), ``destination`` stages an upload, ``run`` writes the corpus,
the report and the summary; ``sources`` is what ``jobs.import_dataset --format`` chooses from."""
