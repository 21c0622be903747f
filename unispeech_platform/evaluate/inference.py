"""Batch inference with Ray Data: decoded rows -> an actor pool where each actor loads the model once.

    rows = run_inference(data_cfg, splits, model_dir, CTCPredictor, section)   # pandas DataFrame

One row per utterance: ``id, lang, split, ref, hyp, error``. CTC: ref/hyp are phone strings (greedy decoding);
LID: the true and the predicted language. Rows the data path cannot use (undecodable audio, unknown phones,
out-of-range duration) come back with ``error`` set and are left out of the scores, never silently lost. A model
whose outputs are NaN/inf fails the whole inference (``evaluate.finite``): its scores would mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from unispeech_platform.config.data import DataConfig
from unispeech_platform.evaluate.finite import (
    NON_FINITE_OUTPUT,
    NonFiniteOutputError,
    check_finite,
    raise_if_marked,
)
from unispeech_platform.runtime.hardware import threads_per_worker, usable_cpus

OUTPUT_SCHEMA = pa.schema(
    [("id", pa.string()), ("lang", pa.string()), ("split", pa.string()), ("ref", pa.string()),
     ("hyp", pa.string()), ("error", pa.string())]
)


class Predictor:
    """Ray Data callable class: built once per actor (loads the model), called once per block of rows."""

    def __init__(self, model_dir: str, data: dict[str, Any], use_gpu: bool = False, cpus: float = 1.0):
        import torch

        torch.set_num_threads(threads_per_worker(cpus, usable_cpus()))  # the CPUs Ray reserved for this actor
        from unispeech_core import PhoneTokenizer
        from unispeech_platform.data.decode import vocab_from

        self.model_dir = model_dir
        self.cfg = DataConfig.model_validate(data)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        # The corpus vocabulary: batches carry reference phones as its ids (the model's may differ).
        self.corpus_tokenizer = PhoneTokenizer(vocab_from(self.cfg.resolved_vocab_path()))
        self.model = self.load(model_dir).to(self.device).eval()

    def load(self, model_dir: str):
        raise NotImplementedError

    def predict(self, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(references, hypotheses) of one collated batch."""
        raise NotImplementedError

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        from unispeech_platform.data.batching import BatchStream

        cols = table.select(["id", "lang", "split", "error"]).to_pydict()
        split_of = dict(zip(cols["id"], cols["split"]))
        out: dict[str, list] = {name: [] for name in OUTPUT_SCHEMA.names}

        def emit(rid, lang, ref, hyp, error):
            for k, v in zip(OUTPUT_SCHEMA.names, (rid, lang, split_of[rid], ref, hyp, error)):
                out[k].append(v)

        for rid, lang, error in zip(cols["id"], cols["lang"], cols["error"]):
            if error is not None:
                emit(rid, lang, None, None, error)
        with torch.inference_mode():
            for padded in BatchStream([table.drop_columns(["split"])], self.cfg, epoch=0, train=False):
                for batch in self.model_batches(padded):
                    try:
                        refs, hyps = self.predict(batch)
                    except NonFiniteOutputError:  # the driver fails the job on these rows (run_inference)
                        refs = hyps = [None] * len(batch["id"])
                        error = NON_FINITE_OUTPUT
                    else:
                        error = None
                    for rid, lang, ref, hyp in zip(batch["id"], batch["lang"], refs, hyps):
                        emit(rid, lang, ref, hyp, error)
        return pa.table(out, schema=OUTPUT_SCHEMA)

    def model_batches(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """What the model is given of one collated batch: the padded batch with its attention mask, or, for a
        group-norm model (``config.pads_safely`` false), each row alone at its own length and without a mask:
        its first conv layer normalises over the whole input, padding included, so padding would change the
        features of every shorter row (transformers documents the same of wav2vec2-base; transcribe's windows
        follow the same rule)."""
        if self.model.config.pads_safely:
            yield batch
            return
        lengths = batch["attention_mask"].sum(-1).tolist()
        for i, length in enumerate(lengths):
            row = {k: v[i:i + 1] for k, v in batch.items()}
            row["input_values"] = row["input_values"][:, :length]
            row["attention_mask"] = None
            yield row

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: None if batch[k] is None else batch[k].to(self.device) for k in ("input_values", "attention_mask")}


class CTCPredictor(Predictor):
    """Phone recognition: greedy CTC decoding of UniSpeechForCTC."""

    def load(self, model_dir: str):
        from unispeech_core import PhoneTokenizer, UniSpeechForCTC

        self.tokenizer = PhoneTokenizer.from_file(model_dir)
        return UniSpeechForCTC.from_pretrained(model_dir)

    def predict(self, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
        from unispeech_core import ctc_greedy_decode

        out = self.model(**self._inputs(batch))
        check_finite(out.logits, out.frame_lengths, self.model_dir, f"utterance {batch['id'][0]}")
        hyps = ctc_greedy_decode(out.logits.float(), out.frame_lengths, self.tokenizer)
        refs = [self.corpus_tokenizer.decode([int(i) for i in row if i >= 0]) for row in batch["labels"]]
        return refs, hyps


class LIDPredictor(Predictor):
    """Language identification: argmax of UniSpeechForSequenceClassification over config.id2label."""

    def load(self, model_dir: str):
        from unispeech_core import UniSpeechForSequenceClassification

        return UniSpeechForSequenceClassification.from_pretrained(model_dir)

    def predict(self, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
        logits = self.model(**self._inputs(batch)).logits
        check_finite(logits, None, self.model_dir, f"utterance {batch['id'][0]}")
        labels = self.model.config.id2label
        return list(batch["lang"]), [labels[int(i)] for i in logits.argmax(-1).tolist()]


def data_for_actors(data: DataConfig, *, labeled_only: bool) -> DataConfig:
    """The data section with absolute paths (inference actors do not share the driver's working directory;
    URIs such as s3://... pass unchanged); PER scoring reads labeled rows only."""
    from unispeech_platform.data.storage import absolute

    return data.model_copy(update={"path": absolute(data.path), "vocab_path": absolute(data.resolved_vocab_path()),
                                   "labeled_only": labeled_only})


def _add_split(table: pa.Table, split: str) -> pa.Table:
    return table.append_column("split", pa.array([split] * table.num_rows, pa.string()))


def run_inference(
    data: DataConfig, splits: list[str], model_dir: str, predictor: type[Predictor], *,
    num_actors: int = 1, cpus_per_actor: float = 1.0, use_gpu: bool = False, batch_rows: int = 32,
):
    """Predictions for every row of the chosen splits (pandas DataFrame, OUTPUT_SCHEMA columns);
    NonFiniteOutputError naming the model when any batch's outputs were NaN/inf."""
    import ray.data

    from unispeech_platform.data.pipeline import build_dataset

    parts = [
        build_dataset(data, split).map_batches(_add_split, fn_kwargs={"split": split}, batch_format="pyarrow")
        for split in splits
    ]
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    ds = ds.map_batches(
        predictor,
        fn_constructor_kwargs={"model_dir": model_dir, "data": data.model_dump(mode="json"), "use_gpu": use_gpu,
                               "cpus": cpus_per_actor},
        batch_format="pyarrow",
        batch_size=batch_rows,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=cpus_per_actor,
        num_gpus=1 if use_gpu else 0,
    )
    predictions = ds.to_pandas()
    raise_if_marked(predictions["error"], predictions["id"], model_dir)
    return predictions
