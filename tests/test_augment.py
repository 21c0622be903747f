"""Training-time augmentation (data/augment.py, docs/data.md#augmentation): deterministic per seed, epoch and row;
speed changes the length and keeps the labels; a 440 Hz tone stays at 440 Hz under noise, reverberation, band
limit and codecs; off by default; counted, and the counts reach MLflow. Pure Python but for the last test, one
tiny Ray + DeepSpeed run (so the module runs under the shared Ray lock)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from data_helpers import encode, good_rows, peak_hz, row, tone, write_part

from unispeech_core.tokenizer import PhoneTokenizer
from unispeech_platform.config import FinetuneJobConfig, PretrainJobConfig, load_config
from unispeech_platform.config.augment import CODECS, NOISE_COLOURS, AugmentConfig
from unispeech_platform.config.base import ConfigError
from unispeech_platform.config.data import DataConfig
from unispeech_platform.data import augment as A
from unispeech_platform.data.decode import LONGER_THAN_MAX
from unispeech_platform.data.pipeline import iter_local_batches
from unispeech_platform.train.batches import LockstepBatches

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
TONE = tone(SR, 2.0)[:, 0]  # 440 Hz at amplitude 0.5
FRAME = 320  # one 20 ms model frame


def only(effect: str, **kw) -> AugmentConfig:
    """Augmentation on, with exactly ``effect`` applied to every row."""
    probs = {f"{e}_prob": 0.0 for e in A.EFFECTS}
    return AugmentConfig(**{"enabled": True, **probs, f"{effect}_prob": 1.0, **kw})


def every_effect(**kw) -> AugmentConfig:
    """Augmentation on, every effect applied to every row."""
    return AugmentConfig(**{"enabled": True, **{f"{e}_prob": 1.0 for e in A.EFFECTS}, **kw})


def run(wave: np.ndarray, cfg: AugmentConfig, *, seed: int = 0, epoch: int = 0, row_id: str = "r", copy: int = 0):
    return A.augment(wave, cfg, seed=seed, epoch=epoch, row_id=row_id, copy=copy)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((noisy - clean).astype(np.float64) ** 2)))


def gated_tone(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """440 Hz switched on and off in random 50 ms pieces: a signal whose position in time can be measured."""
    gate = np.random.default_rng(seed).random(int(seconds * 20)) < 0.5
    return (TONE[: int(seconds * SR)] * np.repeat(gate, SR // 20)).astype(np.float32)


def lag(reference: np.ndarray, shifted: np.ndarray) -> int:
    """Samples by which ``shifted`` lags ``reference`` (envelope cross-correlation)."""
    a, b = np.abs(reference) - np.abs(reference).mean(), np.abs(shifted) - np.abs(shifted).mean()
    corr = np.fft.irfft(np.fft.rfft(b, 2 * len(a)) * np.conj(np.fft.rfft(a, 2 * len(a))))
    k = int(np.argmax(corr))
    return k if k < len(a) else k - 2 * len(a)


# --- determinism -------------------------------------------------------------------------------------------------


def test_same_seed_epoch_row_gives_identical_audio_and_any_other_key_differs():
    cfg = every_effect(speed_factors=[0.9, 1.1])
    first = run(TONE, cfg)
    assert first.applied == A.EFFECTS
    again = run(TONE, cfg)
    assert np.array_equal(first.wave, again.wave) and first.drawn == again.drawn
    for other in (run(TONE, cfg, seed=1), run(TONE, cfg, epoch=1), run(TONE, cfg, row_id="s"), run(TONE, cfg, copy=1)):
        assert other.drawn != first.drawn
        assert len(other.wave) != len(first.wave) or not np.array_equal(other.wave, first.wave)


def test_one_effects_draws_do_not_depend_on_the_others():
    alone = run(TONE, only("noise"))
    with_speed_off_reverb_on = run(TONE, only("noise", reverb_prob=1.0))
    assert alone.drawn["snr_db"] == with_speed_off_reverb_on.drawn["snr_db"]
    assert alone.drawn["noise"] == with_speed_off_reverb_on.drawn["noise"]


# --- each effect ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_by_the_factor(factor):
    out = run(TONE, only("speed", speed_factors=[factor]))
    assert out.applied == ("speed",) and out.drawn["speed"] == factor
    assert abs(len(out.wave) - len(TONE) / factor) <= 1
    assert abs(peak_hz(out.wave) - 440 * factor) <= 2  # speed perturbation moves the pitch with the tempo


def test_speed_factor_one_leaves_the_row_alone():
    out = run(TONE, only("speed", speed_factors=[1.0]))
    assert out.applied == () and np.array_equal(out.wave, TONE)


@pytest.mark.parametrize("colour", NOISE_COLOURS)
def test_noise_hits_the_drawn_snr_and_the_tone_stays_at_440(colour):
    out = run(TONE, only("noise", noise_colours=[colour], noise_snr_db=(5.0, 15.0)))
    assert out.drawn["noise"] == colour and 5.0 <= out.drawn["snr_db"] <= 15.0
    assert abs(snr_db(TONE, out.wave) - out.drawn["snr_db"]) < 0.5
    assert len(out.wave) == len(TONE) and abs(peak_hz(out.wave) - 440) <= 2


def test_noise_at_10_db_keeps_the_tone():
    out = run(TONE, only("noise", noise_snr_db=(10.0, 10.0)))
    assert abs(snr_db(TONE, out.wave) - 10.0) < 0.5 and abs(peak_hz(out.wave) - 440) <= 2


def test_noise_colours_have_their_spectral_slopes():
    rng = np.random.default_rng(0)
    freqs = np.fft.rfftfreq(4 * SR, 1 / SR)
    for colour, slope in (("white", 0.0), ("pink", -1.0), ("brown", -2.0)):
        power = np.abs(np.fft.rfft(A.coloured_noise(colour, 4 * SR, rng).numpy())) ** 2
        band = (freqs > 100) & (freqs < 6000)
        fitted = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
        assert abs(fitted - slope) < 0.15, (colour, fitted)


def test_reverb_keeps_length_level_and_the_tone():
    out = run(TONE, only("reverb", reverb_rt60_s=(0.8, 0.8)))
    assert out.applied == ("reverb",) and len(out.wave) == len(TONE)
    assert abs(peak_hz(out.wave) - 440) <= 2
    assert np.sqrt(np.mean(out.wave**2)) == pytest.approx(np.sqrt(np.mean(TONE**2)), rel=1e-3)
    gated = gated_tone()
    assert not np.array_equal(run(gated, only("reverb")).wave, gated)
    assert abs(lag(gated, run(gated, only("reverb")).wave)) <= FRAME  # the direct path is not delayed


@pytest.mark.parametrize("rt60_s, drr_db", [(0.3, 0.0), (0.8, -3.0), (1.5, 6.0)])
def test_room_impulse_response_decays_at_its_rt60_with_its_direct_to_reverberant_ratio(rt60_s, drr_db):
    rir = A.room_impulse_response(rt60_s, drr_db, np.random.default_rng(1)).double().numpy()
    assert np.sum(rir**2) == pytest.approx(1.0, rel=1e-5)
    assert 10 * np.log10(rir[0] ** 2 / np.sum(rir[1:] ** 2)) == pytest.approx(drr_db, abs=1e-3)
    # Schroeder backward integration of the tail; RT60 from its -5 to -25 dB slope (T20 x 3)
    edc = np.cumsum(rir[1:][::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t5, t25 = np.argmax(edc_db <= -5) / SR, np.argmax(edc_db <= -25) / SR
    assert 3 * (t25 - t5) == pytest.approx(rt60_s, rel=0.15)


def test_band_limit_removes_energy_outside_the_band():
    noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    out = run(noise, only("bandlimit", bandlimit_highpass_hz=(300.0, 300.0), bandlimit_lowpass_hz=(3400.0, 3400.0)))
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)

    def kept(lo: float, hi: float) -> float:
        band = (freqs >= lo) & (freqs < hi)
        return float(np.sum(np.abs(np.fft.rfft(out.wave))[band] ** 2) / np.sum(np.abs(np.fft.rfft(noise))[band] ** 2))

    assert kept(600, 2000) > 0.8  # the pass band stays
    assert kept(6800, 8000) < 0.01  # an octave above the low-pass: < -20 dB
    assert kept(20, 75) < 0.01  # two octaves below the high-pass
    tone_out = run(TONE, only("bandlimit"))
    assert len(tone_out.wave) == len(TONE) and abs(peak_hz(tone_out.wave) - 440) <= 2


@pytest.mark.parametrize("codec", CODECS)
def test_codec_round_trip_keeps_length_time_and_the_tone(codec):
    gated = gated_tone()
    out = run(gated, only("codec", codecs=[codec], codec_compression=(0.99, 0.99)))
    assert out.applied == ("codec",) and out.drawn["codec"] == codec
    assert len(out.wave) == len(gated)
    assert abs(lag(gated, out.wave)) <= FRAME
    assert abs(peak_hz(out.wave) - 440) <= 2
    assert not np.allclose(out.wave, gated, atol=1e-4)  # it is lossy: the codec really ran
    assert snr_db(gated, out.wave) > 3


# --- noise and impulse responses from the user's folders (data/audio_bank.py) -----------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A MUSAN-style noise folder (a 3 kHz tone as 8 kHz stereo WAV, a 2.5 kHz tone as FLAC in a subfolder, an Ogg
    Vorbis 3.5 kHz tone, a README that is not audio) and an impulse-response folder (one measured-like response:
    30 ms of propagation delay, the direct path, an echo 50 ms later at half amplitude)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("banks")
    noise = root / "noise"
    (noise / "street").mkdir(parents=True)
    sf.write(noise / "hum.wav", tone(8000, 0.5, freq=3000.0, channels=2), 8000)
    sf.write(noise / "street" / "car.flac", tone(SR, 3.0, freq=2500.0), SR)
    sf.write(noise / "wind.ogg", tone(SR, 3.0, freq=3500.0), SR, format="OGG", subtype="VORBIS")
    (noise / "README.txt").write_text("MUSAN-style noise\n")
    rirs = root / "rirs"
    rirs.mkdir()
    rir = np.zeros(SR // 5, dtype=np.float32)
    rir[480], rir[480 + 800] = 1.0, 0.5
    sf.write(rirs / "hall.wav", rir, SR, subtype="FLOAT")
    return noise, rirs


def from_files(noise_dir, **kw) -> AugmentConfig:
    return only("noise", noise_dir=str(noise_dir), **kw)


def test_noise_from_a_folder_is_a_recorded_file_at_the_drawn_snr_and_deterministic_per_row(folders):
    noise_dir, _ = folders
    files = {"hum.wav": 3000, "street/car.flac": 2500, "wind.ogg": 3500}
    seen = set()
    for row_id in [f"r{i}" for i in range(12)]:
        out = run(TONE, from_files(noise_dir, noise_snr_db=(0.0, 10.0)), row_id=row_id)
        again = run(TONE, from_files(noise_dir, noise_snr_db=(0.0, 10.0)), row_id=row_id)
        assert out.applied == ("noise",) and np.array_equal(out.wave, again.wave) and out.drawn == again.drawn
        name = out.drawn["noise"]
        assert name in files, name  # never the README
        assert abs(snr_db(TONE, out.wave) - out.drawn["snr_db"]) < 0.1, (row_id, out.drawn)
        assert abs(peak_hz(out.wave - TONE) - files[name]) <= 4, (name, peak_hz(out.wave - TONE))  # that file's noise
        seen.add(name)
    assert seen == set(files)  # every file is drawn; the 0.5 s hum is looped under a 2 s utterance
    assert run(TONE, from_files(noise_dir), row_id="r0", epoch=1).drawn != run(TONE, from_files(noise_dir), row_id="r0").drawn


def test_impulse_responses_from_a_folder_start_at_their_direct_path(folders):
    _, rir_dir = folders
    x = gated_tone()
    out = run(x, only("reverb", rir_dir=str(rir_dir)))
    assert out.applied == ("reverb",) and out.drawn["rir"] == "hall.wav" and "rt60_s" not in out.drawn
    rir = np.zeros(801)
    rir[0], rir[800] = 1.0, 0.5  # the 30 ms before the direct path is cut: the speech keeps its place in time
    expected = np.convolve(x, rir)[: len(x)]
    expected *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(expected**2))
    np.testing.assert_allclose(out.wave, expected, atol=1e-4)


def test_a_folder_that_cannot_serve_stops_the_job_before_ray_naming_the_key_and_file(folders, tmp_path):
    from unispeech_platform.data.audio_bank import AudioBankError, check_augment_folders
    from unispeech_platform.runtime.errors import JobSetupError

    noise_dir, rir_dir = folders
    check_augment_folders(from_files(noise_dir, rir_dir=str(rir_dir), reverb_prob=1.0))  # the good folders pass
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cut.wav").write_bytes(encode(TONE, SR, "WAV")[:30])
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "stream.wav")
    for cfg, fragment in [
        (from_files(tmp_path / "missing"), "data.augment.noise_dir: "),
        (from_files(tmp_path / "empty"), "no audio files in it"),
        (from_files(bad), "cut.wav: "),
        (from_files(fifo), "fifo: no audio files in it"),  # a FIFO is not a file: never listed, never opened
        (only("reverb", rir_dir=str(bad)), "data.augment.rir_dir: "),
    ]:
        with pytest.raises(AudioBankError, match=fragment) as e:
            check_augment_folders(cfg)
        assert isinstance(e.value, JobSetupError) and "\n" not in str(e.value)  # exit 3, one line
    check_augment_folders(from_files(tmp_path / "missing", enabled=False))  # off: not read at all


def test_a_file_that_breaks_during_training_leaves_its_rows_clean_and_says_so_once(tmp_path, caplog):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cut.wav").write_bytes(encode(TONE, SR, "WAV")[:30])
    with caplog.at_level("WARNING"):
        outs = [run(TONE, from_files(bad), row_id=f"r{i}") for i in range(3)]
    assert all(o.applied == () and np.array_equal(o.wave, TONE) for o in outs)
    assert sum("cut.wav" in r.getMessage() for r in caplog.records) == 1


def test_a_relative_folder_is_made_absolute_where_the_config_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = AugmentConfig(noise_dir="noise", rir_dir="s3://bucket/rirs")
    assert cfg.noise_dir == str(tmp_path / "noise") and cfg.rir_dir == "s3://bucket/rirs"
    with pytest.raises(ValueError, match="must name a folder"):
        AugmentConfig(noise_dir=" ")


# --- configuration -------------------------------------------------------------------------------------------------


def test_off_by_default_for_every_job():
    assert DataConfig(path="x").augment.enabled is False
    for cls, preset in ((PretrainJobConfig, "ci.yaml"), (PretrainJobConfig, "tiny.yaml"), (FinetuneJobConfig, "ci.yaml")):
        assert load_config(cls, ROOT / "configs" / preset).data.augment.enabled is False
    assert all(f.description for f in AugmentConfig.model_fields.values())


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.augment.noise_snr_db=[20,5]", "data.augment.noise_snr_db: Value error, must be [min, max]"),
        ("data.augment.noise_snr_db=[0,99]", "data.augment.noise_snr_db: Value error, must lie within [-10.0, 60.0]"),
        ("data.augment.speed_prob=1.5", "data.augment.speed_prob: Input should be less than or equal to 1"),
        ("data.augment.speed_factors=[0.1]", "data.augment.speed_factors.0: Input should be greater than or equal"),
        ("data.augment.bandlimit_lowpass_hz=[3000,9000]", "data.augment.bandlimit_lowpass_hz"),
        ("data.augment.codecs=[flac]", "data.augment.codecs.0: Input should be 'mp3'"),
        ("data.augment.noise_colours=[]", "data.augment.noise_colours: List should have at least 1 item"),
        ("data.augment.nosie_prob=0.5", "data.augment.nosie_prob: unknown key (valid keys here: bandlimit_highpass_hz"),
    ],
)
def test_bad_augment_keys_are_named(override, fragment):
    for cls in (PretrainJobConfig, FinetuneJobConfig):
        with pytest.raises(ConfigError) as e:
            load_config(cls, ROOT / "configs" / "ci.yaml", [override])
        assert fragment in str(e.value)


def test_a_bad_range_exits_2_naming_the_key():
    code = (
        "from jobs.finetune import main\n"
        "try:\n    main(['--config', 'configs/ci.yaml', '--set', 'data.augment.reverb_rt60_s=[0.5,0.1]'])\n"
        "except SystemExit as e:\n    print('EXIT', e.code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "EXIT 2" in out.stdout, out.stdout + out.stderr
    assert "data.augment.reverb_rt60_s" in out.stderr


# --- in the pipeline -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 labeled rows of 1-1.75 s and 2 unlabeled rows of 3.9 s (near max_duration_s = 4)."""
    root = tmp_path_factory.mktemp("augment")
    long_rows = [row(f"long-{i}", encode(tone(SR, 3.9), SR, "FLAC"), SR, int(3.9 * SR), phones=None) for i in range(2)]
    write_part(root, "es", "train", good_rows("es", 12) + long_rows)
    write_part(root, "es", "dev", good_rows("es-dev", 2))
    PhoneTokenizer.from_phones(["a b c d"]).save(root)
    return root


def data_cfg(root: Path, **augment) -> DataConfig:
    return DataConfig(
        path=str(root), max_batch_seconds=8.0, max_duration_s=4.0, max_batch_size=4, shuffle_buffer_rows=16,
        decode_batch_rows=4, augment=augment,
    )


def rows_of(stream) -> dict[str, tuple[np.ndarray, list[int], bool]]:
    out = {}
    for batch in stream:
        for i, rid in enumerate(batch["id"]):
            n = int(batch["attention_mask"][i].sum())
            labels = [int(v) for v in batch["labels"][i] if v != -100]
            out[rid] = (batch["input_values"][i, :n].numpy(), labels, bool(batch["labeled"][i]))
    return out


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["id"] == y["id"] and x["input_values"].equal(y["input_values"]) and x["labels"].equal(y["labels"])
        for x, y in zip(a, b, strict=True)
    )


def test_off_gives_bit_identical_batches_and_evaluation_is_never_augmented(corpus):
    disabled = data_cfg(corpus, **every_effect(enabled=False).model_dump())  # every effect at p=1, but off
    enabled = data_cfg(corpus, **every_effect().model_dump())
    default_train = list(iter_local_batches(data_cfg(corpus), "train", train=True))
    off = iter_local_batches(disabled, "train", train=True)
    assert same_batches(default_train, list(off)) and sum(off.augmented.values()) == 0
    on = iter_local_batches(enabled, "train", train=True)
    on_batches = list(on)
    assert not same_batches(default_train, on_batches)
    assert on.augmented["codec"] == sum(len(b["id"]) for b in on_batches) > 0
    evaluation = iter_local_batches(enabled, "train", train=False)
    assert same_batches(list(iter_local_batches(data_cfg(corpus), "train")), list(evaluation))
    assert sum(evaluation.augmented.values()) == 0


def test_training_batches_carry_augmented_audio_with_their_labels(corpus):
    plain = rows_of(iter_local_batches(data_cfg(corpus), "train", train=True))
    cfg = data_cfg(corpus, **only("speed", speed_factors=[1.1], noise_prob=1.0).model_dump())
    stream = iter_local_batches(cfg, "train", train=True)
    augmented = rows_of(stream)
    assert augmented.keys() == plain.keys()
    for rid, (wave, labels, labeled) in augmented.items():
        plain_wave, plain_labels, plain_labeled = plain[rid]
        assert labels == plain_labels and labeled == plain_labeled  # speed changed the audio, not the phones
        assert abs(len(wave) - len(plain_wave) / 1.1) <= 1
    assert stream.augmented == {"speed": 14, "reverb": 0, "noise": 14, "bandlimit": 0, "codec": 0}
    again = iter_local_batches(cfg, "train", train=True)
    assert all(np.array_equal(w, augmented[rid][0]) for rid, (w, _, _) in rows_of(again).items())
    other_epoch = rows_of(iter_local_batches(cfg, "train", train=True, epoch=1))
    assert any(not np.array_equal(w, augmented[rid][0]) for rid, (w, _, _) in other_epoch.items())


def test_slowed_rows_past_max_duration_are_cropped_or_dropped_and_counted(corpus):
    slow = only("speed", speed_factors=[0.9]).model_dump()
    stream = iter_local_batches(data_cfg(corpus, **slow), "train", train=True)
    got = rows_of(stream)
    assert not any(rid.startswith("long-") for rid in got)  # 3.9 s / 0.9 = 4.33 s > 4 s: dropped, counted
    assert stream.dropped[LONGER_THAN_MAX] == 2 and stream.augmented["speed"] == 12
    cropped = iter_local_batches(data_cfg(corpus, **slow).model_copy(update={"crop_seconds": 3.0}), "train", train=True)
    got = rows_of(cropped)
    for rid in ("long-0", "long-1"):  # unlabeled: the existing crop rule brings them back under the limit
        assert len(got[rid][0]) == 3 * SR and got[rid][2] is False
    assert cropped.dropped[LONGER_THAN_MAX] == 0 and cropped.augmented["speed"] == 14


def test_the_training_feed_totals_augmented_rows_over_epochs(corpus):
    cfg = data_cfg(corpus, **only("noise").model_dump())
    feed = LockstepBatches(lambda epoch: iter_local_batches(cfg, "train", train=True, epoch=epoch))
    rows: Counter[int] = Counter()
    while feed.epoch < 2:  # two whole epochs, then the first batch of the third
        batch = feed.next()
        rows[feed.epoch] += len(batch["id"])
    assert rows[0] == rows[1] == 14
    # rows are counted as they enter the batching pool (like dropped rows): the third epoch's 14 are in it
    assert feed.augmented["noise"] == 3 * 14 and feed.dropped == Counter()


@pytest.mark.slow
def test_a_training_run_logs_augmented_rows_to_mlflow(corpus, tmp_path):
    """The counts travel like bad_rows/*: summed over ranks, logged every log_every (1 worker, 3 updates)."""
    from train_helpers import ci_job, local_ray

    from unispeech_platform.tracking import metric_history
    from unispeech_platform.train import run_training

    job = ci_job(corpus, tmp_path, "augment", "train.num_workers=1", "train.max_steps=3",
                 "data.augment.enabled=true", "data.augment.codec_prob=1", "data.augment.codecs=[mulaw]")
    with local_ray():
        result = run_training(job)
    codec = metric_history(result.tracking_uri, result.run_id, "augmented/codec")
    assert [step for step, _ in codec] == [1, 2, 3]
    counts = [v for _, v in codec]
    assert counts == sorted(counts) and counts[0] >= 1  # every delivered row went through the codec
    assert metric_history(result.tracking_uri, result.run_id, "augmented/speed")
