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
