"""Secrets in configs and URIs are redacted before anything is logged or printed."""

from __future__ import annotations

from unispeech_platform.config.redact import is_secret_key, redact_config, redact_uri, strip_userinfo


def test_uri_userinfo_is_redacted_and_strippable():
    assert redact_uri("https://alice:hunter2@mlflow.example:5000/x") == "https://***@mlflow.example:5000/x"
    assert redact_uri("server https://alice:hunter2@h:1 and s3://AKIA:sk@bucket/p") == (
        "server https://***@h:1 and s3://***@bucket/p")
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert strip_userinfo("http://alice:hunter2@127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_credential_like_keys_and_env_vars_are_redacted():
    assert [is_secret_key(k) for k in ("AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD", "api_key", "token",
                                       "hidden_size", "max_steps", "monkey", "keep")] == [True] * 4 + [False] * 4
    dump = {
        "tracking": {"uri": "http://alice:hunter2@h:5000", "experiment": "x"},
        "ray": {"runtime_env": {"env_vars": {"HF_HOME": "/cache", "AWS_SECRET_ACCESS_KEY": "s3cr3t"},
                                "pip": ["torch"]}},
        "train": {"max_steps": 5, "deepspeed": {"api_token": "t0k"}},
        "unset": {"password": None},
    }
    assert redact_config(dump) == {
        "tracking": {"uri": "http://***@h:5000", "experiment": "x"},
        "ray": {"runtime_env": {"env_vars": {"HF_HOME": "***", "AWS_SECRET_ACCESS_KEY": "***"}, "pip": ["torch"]}},
        "train": {"max_steps": 5, "deepspeed": {"api_token": "***"}},
        "unset": {"password": None},
    }
    assert dump["tracking"]["uri"] == "http://alice:hunter2@h:5000"  # the job keeps the real value


def test_credential_like_query_parameters_are_redacted_wherever_they_stand():
    text = ("ERROR: s3://AK:SK@b/c?endpoint_override=http://h:9000&access_key=AK1&secret_key=SK1: cannot list; "
            "presigned https://h/o?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ff00&keep=1 and "
            "https://acct.blob/c?sv=1&sig=abc%3D;token=t0k&password=pw")
    assert redact_uri(text) == (
        "ERROR: s3://***@b/c?endpoint_override=http://h:9000&access_key=***&secret_key=***: cannot list; "
        "presigned https://h/o?X-Amz-Credential=***&X-Amz-Signature=***&keep=1 and "
        "https://acct.blob/c?sv=1&sig=***;token=***&password=***")


def test_every_exit_a_process_prints_through_is_redacted(capsys):
    """Log records (with arguments and exception text), warnings and the standard streams of a job process."""
    import io
    import logging
    import warnings

    from unispeech_platform.runtime.redaction import RedactingStream, _redact_record, install_redaction

    install_redaction()
    secret = "s3://AK:SK@b/c?secret_key=SK2"
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "cannot open %s", (secret,), None)
    try:
        raise OSError(f"failed on {secret}")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    out = _redact_record(record)
    assert out.getMessage() == "cannot open s3://***@b/c?secret_key=***"
    assert "SK" not in out.exc_text.replace("secret_key", "") and "OSError: failed on s3://***@b/c" in out.exc_text
    assert "SK2" not in warnings.formatwarning(f"bad {secret}", UserWarning, "f.py", 3)
    buffer = io.StringIO()
    stream = RedactingStream(buffer)
    print(f"ERROR: {secret}", file=stream)
    assert buffer.getvalue() == "ERROR: s3://***@b/c?secret_key=***\n" and stream.getvalue() == buffer.getvalue()


def test_a_job_never_prints_the_credentials_of_its_data_uri(tmp_path):
    """The real CLIs, as a user runs them: a config error (exit 2) quoting the URI, and a setup error (exit 3)
    printed by the job itself."""
    import subprocess
    import sys

    from train_helpers import ROOT

    uri = "s3://KEY1:SECRET1@bucket/c?endpoint_override=http://127.0.0.1:9&access_key=AK1&secret_key=SK1"
    runs = [
        ([sys.executable, "-m", "jobs.pretrain", "--config", "configs/tiny.yaml", "--set", f"data.path={uri}",
          "--set", f"data.langs={uri}"], 2),
        ([sys.executable, "-m", "jobs.validate_data", uri], 3),
    ]
    for cmd, code in runs:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
        out = done.stdout + done.stderr
        assert done.returncode == code, out[-2000:]
        assert "s3://***@bucket/c" in out, out[-2000:]
        for secret in ("KEY1", "SECRET1", "AK1", "SK1"):
            assert secret not in out, (secret, out[-2000:])
