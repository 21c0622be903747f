"""perf/step_efficiency's bare step (train/step_efficiency.py) on the CI preset's real model and pretraining task,
without Ray: it times something, and it leaves the training exactly as it found it."""

from __future__ import annotations

import torch
from train_helpers import CI_CONFIG

from unispeech_platform.config import PretrainJobConfig, load_config
from unispeech_platform.train.step_efficiency import bare_audio_seconds_per_s, plain_copy, timed_steps
from unispeech_platform.train.tasks import task_for_job


def _task_and_model(*overrides: str):
    job = load_config(PretrainJobConfig, CI_CONFIG, ["data.path=unused", *overrides])
    torch.manual_seed(0)
    task = task_for_job(job, None)
    return job, task, task.build_model().train()


def _batch(rows: int = 3, samples: int = 16_000) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(rows, samples, dtype=torch.long)
    mask[0, samples // 2:] = 0  # one padded row, as real batches have
    labels = torch.randint(3, 10, (rows, 6), generator=g)
    labels[1, 4:] = -100
    return {"input_values": torch.randn(rows, samples, generator=g) * mask, "attention_mask": mask,
            "labels": labels, "labeled": torch.tensor([True, True, False])}


def test_the_bare_step_times_the_task_and_leaves_model_rng_and_probe_as_they_were():
    _, task, model = _task_and_model()
    model.set_gumbel_temperature(1.25)
    task.probe_gradients = True  # this update's gradient-share probe must still run on the real model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    batch = _batch()

    rate = bare_audio_seconds_per_s(task, model, batch, torch.device("cpu"), None, steps=2)

    assert rate > 0.0
    assert torch.equal(torch.get_rng_state(), rng)  # masks and negatives of the next real update are the same
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and task.probe_gradients is True


def test_the_plain_copy_computes_what_the_model_does():
    _, task, model = _task_and_model()
    model.set_gumbel_temperature(0.7)
    model.freeze_feature_encoder()
    copy = plain_copy(model)
    assert copy is not model and copy.quantizer.temperature == 0.7
    assert [p.requires_grad for p in copy.parameters()] == [p.requires_grad for p in model.parameters()]
    batch = _batch()
    model.eval(), copy.eval()
    with torch.no_grad():
        ours, theirs = (m.unispeech(batch["input_values"], attention_mask=batch["attention_mask"]).last_hidden_state
                        for m in (copy, model))
    assert torch.equal(ours, theirs)


def test_the_measurement_runs_on_cpu_by_default_only_in_runs_long_enough_to_hide_it():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    short, long = (_task_and_model(f"train.max_steps={n}")[0].train for n in (10, 50))
    assert (timed_steps(short, cpu), timed_steps(long, cpu), timed_steps(long, gpu)) == (0, 3, 0)
    asked = _task_and_model("train.max_steps=10", "train.step_efficiency_steps=2")[0].train
    zero3 = _task_and_model("train.max_steps=500", "train.zero_stage=3")[0].train
    assert (timed_steps(asked, cpu), timed_steps(zero3, cpu)) == (2, 0)
