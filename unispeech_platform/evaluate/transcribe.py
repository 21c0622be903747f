"""Transcription of arbitrary audio with an exported CTC model: inputs -> utterances -> batched forward passes ->
greedy or beam decoding -> one JSON object per utterance with per-token times in seconds.

    transcribe(TranscribeOptions(model=..., out=..., inputs=[...]))   # what ``jobs.transcribe`` runs

Inputs are files, directories (recursive; audio extensions libsndfile knows), globs, or corpus directories
(``*.parquet`` parts: every row with its ``id``). Audio is decoded with soundfile, downmixed and resampled to
16 kHz with torchaudio (``data.audio``, the training data path), and normalised once per file. A file longer
than ``chunk_seconds`` is decoded in overlapping windows (``chunk_overlap_seconds`` shared, 5 s by default), so
memory stays bounded: each frame's output is taken from the window where it lies farthest from an edge (windows
meet in the middle of their overlap, ``stitch``) and the whole file's stitched outputs are decoded at once, so a
token at a cut is neither doubled nor lost, and the tail is never dropped (the last window runs to the end). A
group-norm model (``feat_extract_norm: group``) is never given padding (it would change its normalisation
statistics): only windows of equal length share a forward pass. A file that cannot be read is reported and
skipped, never fatal. Small inputs run in this process; large ones on a Ray Data actor pool (each actor loads the
model once, a GPU each when the cluster has them).
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unispeech_platform.data import audio_file
from unispeech_platform.data.audio_file import AudioFileError, read_audio_file
from unispeech_platform.evaluate.finite import NON_FINITE_OUTPUT, NonFiniteOutputError, check_finite
from unispeech_platform.evaluate.model_source import WorkDir
from unispeech_platform.runtime.errors import JobSetupError
from unispeech_platform.runtime.failures import Failure
from unispeech_platform.runtime.output_parent import check_output_parent
from unispeech_platform.runtime.output_paths import (
    OutputPathError,
    atomic_output_file,
    check_kind,
    check_not_input,
    open_output_dir,
)

PARQUET = ".parquet"
SAMPLE_RATE = 16_000
DEFAULT_OVERLAP_SECONDS = 5.0
MIN_WINDOW_SECONDS = 1.0
# Reasons an input is not transcribed (besides the audio reasons of data/audio.py).
NO_INPUT = "no_input"
UNREADABLE = "unreadable"
NO_AUDIO_COLUMN = "no_audio_column"


@dataclass(frozen=True)
class TranscribeOptions:
    model: str
    out: str
    inputs: list[str]
    decoder: str = "greedy"
    """greedy | beam"""
    beam_size: int = 16
    lm_path: str | None = None
    lm_weight: float = 0.5
    batch_size: int = 8
    """Audio windows per forward pass."""
    chunk_seconds: float = 30.0
    """Longer audio is decoded in windows this long (the last one runs to the end of the file)."""
    chunk_overlap_seconds: float | None = None
    """How much consecutive windows share (less than half a window); None: DEFAULT_OVERLAP_SECONDS, at most a
    quarter of the window."""
    ray: str = "auto"
    """auto (Ray from ray_min_inputs inputs on) | never | always"""
    ray_min_inputs: int = 200
    num_actors: int = 1
    use_gpu: bool | None = None
    progress: bool = True
    overwrite: bool = False
    """Replace an existing --out file that is not an earlier transcription (docs/data.md#where-a-job-writes)."""


@dataclass
class Utterance:
    path: str
    wave: np.ndarray
    """16 kHz mono float32."""
    id: str | None = None


@dataclass(frozen=True)
class Window:
    """Samples [start, end) of utterance ``utt``."""

    utt: int
    start: int
    end: int


def receptive_field(conv_kernel: list[int], conv_stride: list[int]) -> int:
    """Samples one frame of the conv stack sees (400 for the standard stack)."""
    field, jump = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def window_sizes(opts: TranscribeOptions, frame_samples: int, field: int = 0) -> tuple[int, int]:
    """(window, overlap) in samples, multiples of the model's frame stride so every window's frames fall on the
    whole file's frame grid. The overlap is at least ``field`` (a frame's receptive field) rounded up to the
    stride, so every frame of the file lies inside some window (with none, the frame that straddles a cut would
    be lost). ValueError for an overlap of half a window or more (the middle of an overlap must lie beyond the
    middle of the previous one)."""
    window = max(int(opts.chunk_seconds * SAMPLE_RATE), int(MIN_WINDOW_SECONDS * SAMPLE_RATE))
    window -= window % frame_samples
    seconds = opts.chunk_overlap_seconds
    if seconds is None:
        seconds = min(DEFAULT_OVERLAP_SECONDS, window / SAMPLE_RATE / 4)
    if seconds < 0 or 2 * seconds * SAMPLE_RATE >= window:
        raise ValueError(f"--chunk-overlap-seconds {seconds:g}: must be at least 0 and less than half of "
                         f"--chunk-seconds ({window / SAMPLE_RATE:g} s)")
    overlap = max(int(seconds * SAMPLE_RATE), field)
    return window, -(-overlap // frame_samples) * frame_samples  # rounded up to the frame grid


def plan_windows(num_samples: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges covering ``num_samples``: one range when it fits in a window, else windows
    ``window - overlap`` apart, the last one running to the end (a tail shorter than the hop is absorbed there,
    never dropped, so the last window is up to one hop longer than the others)."""
    if num_samples <= window:
        return [(0, num_samples)]
    hop = window - overlap
    count = (num_samples - window) // hop + 1
    return [(k * hop, k * hop + window if k < count - 1 else num_samples) for k in range(count)]


def stitch(pieces: list[tuple[int, int, Any]], frame_samples: int) -> Any:
    """One utterance's frame outputs from its windows' ([start, end) in samples, frames [n, classes]), in order.
    Each frame is taken from the window where it lies farthest from an edge: consecutive windows meet in the
    middle of their overlap, so no frame is taken twice or lost, and the frames near a cut (whose context one
    window lacks) come from the window that saw the most around them. Window starts are multiples of
    ``frame_samples``: window k's frame j is the whole file's frame start/frame_samples + j."""
    import torch

    kept, lo = [], 0
    for k, (start, end, frames) in enumerate(pieces):
        first = start // frame_samples
        hi = first + len(frames)
        if k + 1 < len(pieces):  # the middle of the overlap with the next window, on the frame grid
            nxt = pieces[k + 1][0]
            hi = min(max((nxt + end) // (2 * frame_samples), nxt // frame_samples), hi)
        if lo < first:  # window_sizes' overlap covers the receptive field: a frame lost here is a bug
            raise ValueError(f"windows at samples {start}-{end} leave frames {lo}-{first} uncovered")
        kept.append(frames[lo - first:hi - first])
        lo = hi
    return torch.cat(kept) if kept else torch.zeros(0)


@dataclass
class Summary:
    transcribed: int
    failures: list[Failure] = field(default_factory=list)
    used_ray: bool = False


def _audio_extensions() -> set[str]:
    import soundfile as sf

    exts = {f".{k.lower()}" for k in sf.available_formats()}
    return exts | {".oga", ".opus", ".aif", ".mp3"}


def collect_inputs(inputs: list[str]) -> tuple[list[str], list[Failure]]:
    """Paths to read (audio files and Parquet parts, sorted, unique) and the inputs that matched nothing."""
    exts = _audio_extensions() | {PARQUET}
    found: list[str] = []
    failures: list[Failure] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            hits = [str(f) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in exts]
        elif p.is_file():
            hits = [str(p)]
        else:
            hits = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
        if not hits:
            failures.append(Failure(where=item, reason=NO_INPUT, detail="no such file, or no audio files in it"))
        found += hits
    return list(dict.fromkeys(found)), failures


def read_utterances(path: str) -> Iterator[Utterance | Failure]:
    """One utterance per audio file; one per row of a Parquet part (``id``, ``audio``, ``sample_rate``)."""
    from unispeech_platform.data.audio import decode_audio, to_mono_16k

    def decoded(audio: bytes | None, rate: int | None, where: str, rid: str | None) -> Utterance | Failure:
        d = decode_audio(audio, rate, None)
        if d.error:
            return Failure(where=where, id=rid or "", reason=d.error, detail=d.detail)
        return Utterance(path, to_mono_16k(d.wave, d.sample_rate), rid)

    if not path.endswith(PARQUET):
        try:
            data = read_audio_file(path)  # regular files only, capped: a FIFO or /dev/zero never hangs it
        except AudioFileError as e:
            reason = UNREADABLE if e.reason == audio_file.UNREADABLE else e.reason
            yield Failure(where=path, reason=reason, detail=e.detail.removeprefix(f"{path}: "))
            return
        yield decoded(data, None, path, None)
        return
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        if "audio" not in names:
            yield Failure(where=path, reason=NO_AUDIO_COLUMN, detail="Parquet part without an 'audio' column")
            return
        cols = [c for c in ("id", "audio", "sample_rate") if c in names]
        for batch in pf.iter_batches(batch_size=64, columns=cols):
            for i, row in enumerate(batch.to_pylist()):
                audio, rid = row["audio"], row.get("id") or str(i)
                if isinstance(audio, dict):  # Hugging Face datasets' struct<bytes, path>
                    audio = audio.get("bytes")
                rate = row.get("sample_rate")
                yield decoded(audio, int(rate) if rate else None, f"{path}#{rid}", rid)
    except Exception as e:  # a broken part: report it, go on with the other inputs
        yield Failure(where=path, reason=UNREADABLE, detail=f"Parquet: {e}")


class Transcriber:
    """Loads the model once; turns utterances into JSON-ready dicts."""

    def __init__(self, model_dir: str, opts: TranscribeOptions, device: str = "cpu"):
        import torch

        from unispeech_core import PhoneTokenizer, UniSpeechForCTC
        from unispeech_core.decoding import frame_seconds
        from unispeech_core.tokenizer import SPECIAL_TOKENS

        self.torch = torch
        self.model_dir = model_dir
        self.tokenizer = PhoneTokenizer.from_file(model_dir)
        self.model = UniSpeechForCTC.from_pretrained(model_dir).to(device).eval()
        self.device = device
        self.stride = frame_seconds(self.model.config.conv_stride)
        self.frame_samples = math.prod(self.model.config.conv_stride)
        c = self.model.config
        self.window_samples, self.overlap_samples = window_sizes(
            opts, self.frame_samples, receptive_field(c.conv_kernel, c.conv_stride))
        self.opts = opts
        self.special = {self.tokenizer.vocab[t] for t in SPECIAL_TOKENS}
        self.tokens = [self.tokenizer.id_to_token[i] for i in range(len(self.tokenizer))]
        self.beam = None
        if opts.decoder == "beam":
            from unispeech_platform.evaluate.beam import BeamDecoder, BeamOptions

            self.beam = BeamDecoder(self.tokens, BeamOptions(opts.beam_size, opts.lm_path, opts.lm_weight))
        from unispeech_platform.evaluate.references import is_character_model

        self.characters = is_character_model(self.tokenizer.vocab)

    def window_logits(self, waves: list[np.ndarray], windows: list[Window], names: list[str] | None = None
                      ) -> list[Any]:
        """Each window's logits ([frames, classes], float32), in the order given. A group-norm model
        (``feat_extract_norm == "group"``) is never given padding: its first conv layer normalises over the whole
        input, so padding would change every frame; only windows of equal length share a forward pass. A
        layer-norm model's windows are sorted by length and padded together under the attention mask. ``waves``:
        normalised utterances the windows index; ``names``: theirs, for the error of NaN/inf outputs."""
        from unispeech_core.features import pad_batch

        torch = self.torch
        out: list[Any] = [None] * len(windows)
        order = sorted(range(len(windows)), key=lambda i: windows[i].end - windows[i].start)
        group_norm = not self.model.config.pads_safely
        size = self.opts.batch_size
        if group_norm:
            groups: dict[int, list[int]] = {}
            for i in order:
                groups.setdefault(windows[i].end - windows[i].start, []).append(i)
            batches = [g[b:b + size] for g in groups.values() for b in range(0, len(g), size)]
        else:
            batches = [order[b:b + size] for b in range(0, len(order), size)]
        with torch.inference_mode():
            for batch in batches:
                pieces = [waves[windows[i].utt][windows[i].start:windows[i].end] for i in batch]
                inputs = pad_batch(pieces, do_normalize=False)  # normalised once per utterance (__call__)
                if group_norm:  # equal lengths: nothing padded, and no mask (a window alone has none)
                    inputs.pop("attention_mask")
                result = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
                logits = result.logits.float()
                lengths = result.frame_lengths if result.frame_lengths is not None else torch.full(
                    (len(batch),), logits.shape[1])
                where = names[windows[batch[0]].utt] if names else "audio"
                check_finite(logits, lengths, self.model_dir, where)  # never an empty transcript
                for row, i, n in zip(logits, batch, lengths.tolist()):
                    out[i] = row[:int(n)].cpu()
        return out

    def __call__(self, utts: list[Utterance]) -> list[dict[str, Any]]:
        """One JSON-ready row per utterance: its windows' logits stitched over the whole file, then decoded once
        (a token at a cut is neither doubled nor lost). Each utterance is normalised once, as a whole."""
        from unispeech_core.features import normalize

        waves = [normalize(u.wave).numpy() if len(u.wave) else np.asarray(u.wave, np.float32) for u in utts]
        windows = [Window(k, s, e) for k, w in enumerate(waves)
                   for s, e in plan_windows(len(w), self.window_samples, self.overlap_samples)]
        logits = self.window_logits(waves, windows, [u.path for u in utts])
        results = []
        for k, u in enumerate(utts):
            pieces = [(w.start, w.end, x) for w, x in zip(windows, logits) if w.utt == k]
            toks = self._decode(stitch(pieces, self.frame_samples))
            phones = " ".join(t["token"] for t in toks)
            text = "".join(t["token"] for t in toks).replace("|", " ").strip() if self.characters else phones
            row = {"path": u.path, "text": text, "tokens": toks, "duration": round(len(u.wave) / 16_000, 4)}
            if u.id is not None:
                row["id"] = u.id
            results.append(row)
        return results

    def _decode(self, logits: Any) -> list[dict[str, Any]]:
        """Tokens with their times, decoded from the whole utterance's stitched logits [frames, classes]."""
        from unispeech_core.decoding import ctc_greedy_spans

        if logits.shape[0] == 0:
            return []
        lengths = self.torch.tensor([logits.shape[0]])
        if self.beam is not None:
            spans = self.beam(logits.log_softmax(-1)[None], lengths)[0]
        else:
            spans = ctc_greedy_spans(logits[None], lengths, self.tokenizer.pad_token_id)[0]
        return [{"token": self.tokens[s.id], "start": round(s.start * self.stride, 4),
                 "end": round(s.end * self.stride, 4)} for s in spans if s.id not in self.special]


def _batches(paths: list[str], size: int) -> Iterator[tuple[list[Utterance], list[Failure]]]:
    utts: list[Utterance] = []
    fails: list[Failure] = []
    for path in paths:
        for item in read_utterances(path):
            if isinstance(item, Failure):
                fails.append(item)
            else:
                utts.append(item)
            if len(utts) >= size:
                yield utts, fails
                utts, fails = [], []
    if utts or fails:
        yield utts, fails


class TranscribeActor:
    """Ray Data callable class: one model per actor; a block of input paths in, JSON lines and failures out."""

    def __init__(self, model_dir: str, opts: dict[str, Any], use_gpu: bool = False):
        import torch

        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.opts = TranscribeOptions(**opts)
        self.transcriber = Transcriber(model_dir, self.opts, device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        lines, failed = [], []
        for utts, fails in _batches(list(batch["path"]), self.opts.batch_size):
            try:
                lines += [json.dumps(r, ensure_ascii=False) for r in (self.transcriber(utts) if utts else [])]
            except NonFiniteOutputError as e:  # cannot cross Ray as itself: the driver raises it (_run_ray)
                fails = [*fails, Failure(where=utts[0].path, reason=NON_FINITE_OUTPUT, detail=str(e))]
            failed += [json.dumps(asdict(f), ensure_ascii=False) for f in fails]
        return {"line": lines + [None] * len(failed), "failure": [None] * len(lines) + failed}


def _run_local(paths: list[str], opts: TranscribeOptions, model_dir: str, out, bar) -> tuple[int, list[Failure]]:
    import torch

    use_gpu = opts.use_gpu is not False and torch.cuda.is_available()
    transcriber = Transcriber(model_dir, opts, "cuda" if use_gpu else "cpu")
    done, failures = 0, []
    for utts, fails in _batches(paths, opts.batch_size):
        failures += fails
        for row in transcriber(utts) if utts else []:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            done += 1
        bar.update(len(utts) + len(fails))
    return done, failures


def _run_ray(paths: list[str], opts: TranscribeOptions, model_dir: str, out, bar) -> tuple[int, list[Failure]]:
    import ray.data

    from unispeech_platform.config import RaySection
    from unispeech_platform.runtime.ray_session import connect_ray, decide_use_gpu

    connect_ray(RaySection())
    use_gpu = decide_use_gpu(opts.use_gpu, opts.num_actors)
    ds = ray.data.from_items([{"path": p} for p in paths]).map_batches(
        TranscribeActor, fn_constructor_kwargs={"model_dir": model_dir, "opts": opts.__dict__, "use_gpu": use_gpu},
        batch_size=max(1, opts.batch_size), compute=ray.data.ActorPoolStrategy(size=opts.num_actors),
        num_gpus=1 if use_gpu else 0,
    )
    done, failures = 0, []
    for row in ds.iter_rows():
        if row["line"] is not None:
            out.write(row["line"] + "\n")
            done += 1
        else:
            failure = Failure.from_dict(json.loads(row["failure"]))
            if failure.reason == NON_FINITE_OUTPUT:
                raise NonFiniteOutputError(failure.detail)
            failures.append(failure)
        bar.update(1)
    return done, failures


TRANSCRIBE_JOB = "transcribe"


def is_transcription(path: Path) -> bool:
    """Whether ``path`` (a regular file) is empty or an earlier output of this job: its first line is one of our
    JSON objects (``path``, ``text``, ``tokens``). Only such a file is replaced without --overwrite."""
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if not first.strip():
        return True
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and {"path", "text", "tokens"} <= set(row)


def check_out_file(out: Path, inputs: list[str], overwrite: bool) -> None:
    """--out may be replaced (runtime/output_paths.py): not an input, not a directory, FIFO, device or link, and
    an earlier transcription unless ``overwrite``. OutputPathError (exit 3) naming it otherwise."""
    check_not_input(out, inputs, "--out")
    st = check_kind(out, "--out", allowed=("a regular file",))
    if st is not None and not overwrite and not is_transcription(out):
        raise OutputPathError(f"--out {out} exists and is not an earlier transcription: pass --overwrite to "
                              "replace it, or choose another path")


def _conversion_dir(out: Path) -> WorkDir:
    """Where a training checkpoint given as --model is converted: ``<out stem>-model/`` beside --out, a directory
    this job marks (opened only when a checkpoint needs it)."""
    return lambda: open_output_dir(out.parent / f"{out.stem}-model", TRANSCRIBE_JOB, overwrite=None,
                                   flag="the model conversion directory")[0]


def transcribe(opts: TranscribeOptions) -> Summary:
    """Transcribe every input into ``opts.out`` (JSONL, written whole or not at all). Raises JobSetupError for a
    bad model, an output that may not be replaced, or when nothing at all could be transcribed; unreadable inputs
    are listed in the summary."""
    from tqdm import tqdm

    from unispeech_platform.evaluate.model_source import resolve_model

    if opts.decoder not in ("greedy", "beam"):
        raise JobSetupError(f"--decoder {opts.decoder!r}: expected greedy or beam")
    try:
        window_sizes(opts, 1)
    except ValueError as e:
        raise JobSetupError(str(e)) from None
    if opts.lm_path and not Path(opts.lm_path).is_file():
        raise JobSetupError(f"--lm {opts.lm_path}: no such file")
    check_output_parent(opts.out, "--out", makes_parents=True)  # written at the end: the place is checked now
    out_path = Path(os.path.abspath(opts.out))  # not resolved: a link named by --out is refused, not followed
    paths, failures = collect_inputs(opts.inputs)
    check_out_file(out_path, [*paths, *([opts.lm_path] if opts.lm_path else [])], opts.overwrite)
    model = resolve_model(opts.model, _conversion_dir(out_path))
    if model.architecture != "UniSpeechForCTC":
        raise JobSetupError(f"{model.model_dir}: a {model.architecture}; transcription needs a UniSpeechForCTC model")
    if not paths:
        raise JobSetupError("no input audio found: " + "; ".join(f"{f.where}: {f.message()}" for f in failures))
    use_ray = opts.ray == "always" or (opts.ray == "auto" and len(paths) >= opts.ray_min_inputs)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output_file(out_path) as out, tqdm(  # a unique temp file renamed when complete: no half file
        total=None if any(p.endswith(PARQUET) for p in paths) else len(paths), unit="utt", file=sys.stderr,
        disable=not opts.progress, desc="transcribing",
    ) as bar:
        run = _run_ray if use_ray else _run_local
        done, more = run(paths, opts, model.model_dir, out, bar)
        failures += more
        if done == 0:  # raised inside the block: the temp file is removed, --out is left as it was
            raise JobSetupError(f"nothing transcribed; {len(failures)} inputs failed, e.g. "
                                f"{failures[0].where}: {failures[0].message()}" if failures else "nothing transcribed")
    return Summary(done, failures, use_ray)
