"""cluster/local_cluster.sh starts a real head + worker node with token auth that works out of the box: it creates
the token (mode 0600) in a fresh HOME, every node gets it (both join), and a request without the token is refused
by the head's GCS (the gRPC service every node talks to), by the worker node's raylet and by the dashboard's Jobs
API, while the same request with the token succeeds. `stop` leaves no process of the cluster behind. Numeric
arguments are checked as text: a command substitution in them is never executed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from train_helpers import ROOT, free_port

SCRIPT = ROOT / "cluster" / "local_cluster.sh"
RUN_ID = "UNISPEECH_TEST_CLUSTER_RUN"  # set only in the script's env: every process of the cluster inherits it



def _script_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's env with a fresh HOME and none of the Ray settings a developer may have exported."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "XDG_STATE_HOME",
                        "RAY_LOCAL_CLUSTER_DIR", "RAY_LOCAL_TEMP_DIR"}}
    return {**env, "HOME": str(home), "RAY_HEAD_PORT": str(free_port()), "RAY_DASHBOARD_PORT": str(free_port()),
            **extra}


def _pids_with(var: str, value: str) -> list[int]:
    """Live processes whose environment holds var=value."""
    needle = f"{var}={value}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("var", ["WORKERS", "RAY_HEAD_PORT", "RAY_NODE_CPUS"])
def test_numeric_arguments_are_checked_as_text_and_never_executed(tmp_path, var):
    marker = tmp_path / "pwned"
    payload = f"a[$(touch {marker})]"
    home = tmp_path / "home"
    home.mkdir()
    env = _script_env(home)
    args = [str(SCRIPT), "start"]
    if var == "WORKERS":
        args.append(payload)
    else:
        env[var] = payload
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{var} must be a whole number, got '{payload}'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists(), "the payload ran"
    assert list(home.iterdir()) == [], "nothing (token, state) is created for a rejected command"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """head + 1 worker node (1 CPU each) from the script, in a fresh HOME (the user's ~/.ray is never touched)."""
    home = tmp_path_factory.mktemp("home")
    run_id = uuid.uuid4().hex
    env = _script_env(home, RAY_NODE_CPUS="1", **{RUN_ID: run_id})
    r = subprocess.run([str(SCRIPT), "start", "1"], env=env, capture_output=True, text=True, timeout=240)
    info = {"env": env, "home": home, "run_id": run_id, "start": r,
            "gcs": f"127.0.0.1:{env['RAY_HEAD_PORT']}", "dashboard": f"http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}"}
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        yield info
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        state = re.search(r"\(state: (/\S+unispeech-ray\.\w{8})\)", r.stdout)
        if state:  # the script keeps its logs; the test does not leave them in /tmp
            ray_temp = Path(state.group(1), "ray_temp_dir")
            if ray_temp.exists():
                shutil.rmtree(ray_temp.read_text().strip(), ignore_errors=True)
            shutil.rmtree(state.group(1), ignore_errors=True)


def _token(cluster) -> str:
    return (cluster["home"] / ".ray" / "auth_token").read_text()


def _call(method, request, token: str | None):
    metadata = [("authorization", f"Bearer {token}")] if token is not None else None
    return method(request, metadata=metadata, timeout=20)


def _assert_refused(method, request, token: str | None) -> None:
    import grpc

    with pytest.raises(grpc.RpcError) as e:
        _call(method, request, token)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value


def test_start_creates_a_private_token_and_gives_it_to_every_node(cluster):
    token_file = cluster["home"] / ".ray" / "auth_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", token_file.read_text())
    assert f"created the Ray auth token {token_file} (mode 0600)" in cluster["start"].stderr
    assert f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token_file}" in cluster["start"].stdout
    state = cluster["start"].stdout.split("(state: ")[1].split(")")[0]
    assert re.fullmatch(r".*/unispeech-ray\.[A-Za-z0-9]{8}", state), state  # mktemp -d, not a predictable path
    assert oct(Path(state).stat().st_mode & 0o777) == oct(0o700)


def test_gcs_refuses_a_node_request_without_the_token(cluster):
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(cluster["gcs"]) as channel:
        get_nodes = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo
        request = gcs_service_pb2.GetAllNodeInfoRequest()
        _assert_refused(get_nodes, request, None)
        _assert_refused(get_nodes, request, "0" * 64)
        nodes = _call(get_nodes, request, _token(cluster)).node_info_list
    alive = [n for n in nodes if n.state == 0]  # GcsNodeInfo.ALIVE
    assert len(alive) == 2, nodes  # the worker node joined: it was given the token
    cluster["worker_raylet"] = next(f"{n.node_manager_address}:{n.node_manager_port}"
                                    for n in alive if not n.is_head_node)


def test_worker_raylet_refuses_a_request_without_the_token(cluster):
    import grpc
    from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

    if "worker_raylet" not in cluster:
        pytest.skip("needs the worker's address from the GCS test")
    with grpc.insecure_channel(cluster["worker_raylet"]) as channel:
        stats = node_manager_pb2_grpc.NodeManagerServiceStub(channel).GetNodeStats
        request = node_manager_pb2.GetNodeStatsRequest()
        _assert_refused(stats, request, None)
        _call(stats, request, _token(cluster))


def test_jobs_api_refuses_a_request_without_the_token(cluster):
    url = cluster["dashboard"] + "/api/jobs/"

    def status(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    assert status(None) == 401
    assert status("0" * 64) == 403
    assert status(_token(cluster)) == 200


def test_stop_leaves_no_process_of_the_cluster(cluster):
    running = _pids_with(RUN_ID, cluster["run_id"])
    assert len(running) >= 4, running  # 2 x `ray start` + GCS + 2 raylets + dashboard ...: the check can fail
    r = subprocess.run([str(SCRIPT), "stop"], env=cluster["env"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _pids_with(RUN_ID, cluster["run_id"]) == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(cluster["env"]["RAY_HEAD_PORT"]))) != 0, "the GCS still listens"


# The cluster manifests cannot start here (AWS, Kubernetes); what they promise is checked on the files themselves.

def _yaml(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def test_launcher_binds_the_dashboard_privately_and_provisions_the_token():
    cfg = _yaml("gpu-cluster.yaml")
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=$(cat ~/head_private_ip)" in head and "0.0.0.0" not in head
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if " start " in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ") for c in starts)
    assert cfg["file_mounts"] == {"~/.ray/auth_token": "~/.ray/unispeech-gpu.auth_token"}  # head and every worker
    assert "chmod 600 ~/.ray/auth_token" in " ".join(cfg["setup_commands"])
    pip = next(c for c in cfg["setup_commands"] if "pip install" in c)
    packages = re.findall(r'"([^"]+)"', pip)
    assert len(packages) == 5 and all("==" in p for p in packages), packages


def test_kuberay_job_pins_images_takes_the_token_from_a_secret_and_retries():
    job = _yaml("kuberay-rayjob.yaml")["spec"]
    cluster = job["rayClusterSpec"]
    assert job["backoffLimit"] > 0
    assert cluster["authOptions"] == {"mode": "token", "secretName": "unispeech-ray-auth"}
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    images = [c["image"] for p in pods for c in p["template"]["spec"]["containers"]]
    assert images and all(re.search(r":\d[\w.-]*$|@sha256:[0-9a-f]{64}$", i) for i in images), images
    envs = [e for p in pods for c in p["template"]["spec"]["containers"] for e in c.get("env", [])]
    assert all("value" not in e for e in envs if "PASSWORD" in e["name"]), "a password inline instead of a Secret"


def test_kuberay_entrypoint_resumes_when_the_run_directory_exists(tmp_path):
    """The entrypoint as KubeRay runs it (pasted into the submitter's shell line, re-joined by `ray job submit`,
    run by the job supervisor's shell) starts fresh, then passes --resume once the run directory exists; the
    arguments parse as a real jobs.pretrain command line whose run directory is the one the entrypoint checks."""
    import json

    from jobs import pretrain
    from unispeech_platform.config import PretrainJobConfig
    from unispeech_platform.runtime.cli import parse_job_args
    from unispeech_platform.runtime.layout import RunLayout

    entrypoint = _yaml("kuberay-rayjob.yaml")["spec"]["entrypoint"]
    run_dir = re.search(r"RUN_DIR=(\S+);", entrypoint).group(1)
    local_run_dir = tmp_path / "runs" / "unispeech-large"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(  # `ray job submit ... -- ENTRYPOINT`: what Ray's CLI hands to the supervisor
        f"#!{sys.executable}\nimport shlex, sys\na = sys.argv[1:]\nprint(shlex.join(a[a.index('--') + 1:]))\n")
    (bin_dir / "python").write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def job_argv() -> list[str]:
        submitter_line = f"ray job submit --address http://head:8265 --no-wait -- {entrypoint} ;"
        submitted = subprocess.run(["sh", "-c", submitter_line], env=env, capture_output=True, text=True, check=True)
        command = submitted.stdout.strip().replace(run_dir, str(local_run_dir))
        ran = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, check=True)
        argv = json.loads(ran.stdout)
        assert argv[:2] == ["-m", "jobs.pretrain"], argv
        return argv[2:]

    fresh = job_argv()
    local_run_dir.mkdir(parents=True)
    retried = job_argv()
    assert "--resume" not in fresh and retried == [*fresh, "--resume"]
    cfg, ns = parse_job_args(pretrain.__doc__, PretrainJobConfig, retried)
    assert ns.resume and RunLayout.of(cfg.checkpoint).run_dir == run_dir
