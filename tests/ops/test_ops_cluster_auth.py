"""Ray token auth as cluster.yaml sets it up, run on this machine.

The head's commands are taken from cluster.yaml (head_setup_commands that make the token,
head_start_ray_commands) and run with only what a laptop test must change: the venv's `ray`
for ~/venv/bin/ray, free ports, a private --temp-dir, a temporary HOME (the token lands in
HOME/.ray/auth_token, never in this machine's ~/.ray), --block so the test owns the processes,
and no --autoscaling-config (there is no autoscaler here). A worker is started with
cluster.yaml's worker_start_ray_commands, once with a copy of the token where
cluster_synced_files puts it and once without. If cluster.yaml stops making the token or
stops starting Ray with token auth, these tests fail.

Isolation: nothing here runs `ray stop` (it stops every Ray of the machine, other tests'
too); teardown kills the process groups this module started, then any process naming its
temp dir, and removes the temporary directories. The environment of every command drops
RAY_ADDRESS and RAY_AUTH_*, so only what cluster.yaml sets counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from ops_util import ROOT, free_port, kill_strays, stop_session

BIN = Path(sys.executable).parent
CFG = yaml.safe_load((ROOT / "cluster.yaml").read_text())
STOP = "~/venv/bin/ray stop"


def clean_env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), PATH=f"{BIN}:{env.get('PATH', '')}", **extra)
    return env


def _sub_once(pattern: str, repl: str, cmd: str) -> str:
    out, n = re.subn(pattern, repl, cmd)
    assert n == 1, f"cluster.yaml command changed shape ({pattern!r} not found once): {cmd}"
    return out


def start_command(kind: str, ports: dict, temp_dir: str | None) -> str:
    """The one `ray start` command of head_start_ray_commands / worker_start_ray_commands, made local."""
    cmds = CFG[f"{kind}_start_ray_commands"]
    assert [c for c in cmds if c.strip() != STOP] and all("ray stop" not in c for c in cmds if c.strip() != STOP)
    (cmd,) = [c for c in cmds if c.strip() != STOP]
    cmd = cmd.replace("~/venv/bin/", f"{BIN}/")
    cmd = _sub_once(r"--object-manager-port=\d+", f"--object-manager-port={ports['om']}", cmd)
    extra = [f"--node-manager-port={ports['nm']}", f"--dashboard-agent-listen-port={ports['agent']}",
             f"--dashboard-agent-grpc-port={ports['agent_grpc']}", f"--runtime-env-agent-port={ports['rtenv']}",
             f"--metrics-export-port={ports['metrics']}", "--num-cpus=1", "--block"]
    if kind == "head":
        cmd = _sub_once(r"--port=\d+", f"--port={ports['gcs']}", cmd)
        cmd = _sub_once(r"--dashboard-port=\d+", f"--dashboard-port={ports['dash']}", cmd)
        cmd = _sub_once(r" --autoscaling-config=\S+", "", cmd)
        extra += [f"--temp-dir={temp_dir}", f"--ray-client-server-port={ports['client']}"]
    else:
        cmd = _sub_once(r"(--address=\$RAY_HEAD_IP):\d+", rf"\g<1>:{ports['gcs']}", cmd)
    return f"{cmd} {' '.join(extra)}"


def token_commands() -> list[str]:
    """head_setup_commands minus the AWS security-group call (no AWS here), ~/venv/bin -> this venv."""
    cmds = [c for c in CFG["head_setup_commands"] if "aws_security_group.py" not in c]
    assert any("get-auth-token" in c for c in cmds), "cluster.yaml no longer makes the Ray token on the head"
    return [c.replace("~/venv/bin/", f"{BIN}/") for c in cmds]


def new_ports() -> dict:
    return {k: free_port() for k in ("gcs", "dash", "client", "om", "nm", "agent", "agent_grpc", "rtenv", "metrics")}


def kill_all(procs: list[subprocess.Popen], temp_dir: str) -> None:
    """Stop only what this module started: its sessions, then any stray pid naming its temp dir."""
    for p in procs:
        stop_session(p, signal.SIGTERM)
    kill_strays(temp_dir)


def http_status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def grpc_code(target: str, call: str, token: str | None):
    """The gRPC status of one cheap RPC to GCS or the Ray client server (None when it succeeds)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc

    md = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(target) as ch:
        try:
            if call == "gcs":
                reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(ch).GetAllNodeInfo(
                    gcs_service_pb2.GetAllNodeInfoRequest(), metadata=md, timeout=15)
                return None, reply
            ray_client_pb2_grpc.RayletDriverStub(ch).ClusterInfo(
                ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING), metadata=md, timeout=15)
            return None, None
        except grpc.RpcError as e:
            return e.code(), None


def alive_nodes(gcs: str, token: str) -> int:
    code, reply = grpc_code(gcs, "gcs", token)
    assert code is None, code
    return sum(1 for n in reply.node_info_list if n.state == 0)  # GcsNodeInfo.ALIVE


@pytest.fixture(scope="module")
def head():
    if not (BIN / "ray").exists():
        pytest.skip("no `ray` next to this Python")
    temp_dir = tempfile.mkdtemp(prefix="ea", dir="/tmp")  # short: Ray's unix sockets live under it
    root = Path(tempfile.mkdtemp(prefix="emi-auth-"))
    head_home, laptop_home = root / "head-home", root / "laptop-home"
    head_home.mkdir()
    laptop_home.mkdir()
    ports = new_ports()
    from ray._private.services import get_node_ip_address

    ip = get_node_ip_address()  # what `ray start` picks; a worker's --address resolves 127.0.0.1 to it
    env = clean_env(head_home)
    procs: list[subprocess.Popen] = []
    log_path = root / "ray-start.log"
    try:
        for c in token_commands():
            r = subprocess.run(["bash", "-c", c], env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, (c, r.stdout, r.stderr)
        token = (head_home / ".ray/auth_token").read_text().strip()
        with log_path.open("w") as log:
            p = subprocess.Popen(["bash", "-c", start_command("head", ports, temp_dir)], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        url = f"http://127.0.0.1:{ports['dash']}"
        deadline = time.time() + 150
        while not _ready(url, token):
            if p.poll() is not None or time.time() > deadline:
                pytest.fail("cluster.yaml's head start command did not come up:\n" + log_path.read_text()[-3000:])
            time.sleep(1)
        yield {"url": url, "gcs": f"{ip}:{ports['gcs']}", "client": f"{ip}:{ports['client']}", "ip": ip,
               "token": token, "head_home": head_home, "laptop_home": laptop_home, "root": root,
               "temp_dir": temp_dir, "procs": procs}
    finally:
        kill_all(procs, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def _ready(url: str, token: str) -> bool:
    try:
        return http_status(f"{url}/api/jobs/", token) == 200
    except OSError:  # not listening yet
        return False


def test_head_token_made_once_private(head):
    path = head["head_home"] / ".ray/auth_token"
    assert re.fullmatch(r"[0-9a-f]{64}", head["token"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for c in token_commands():  # `ray up` again (setup commands re-run): the token stays
        subprocess.run(["bash", "-c", c], env=clean_env(head["head_home"]), check=True, capture_output=True,
                       timeout=120)
    assert path.read_text().strip() == head["token"]


def test_dashboard_grpc_and_client_port_refuse_without_token(head):
    import grpc

    jobs = f"{head['url']}/api/jobs/"
    assert http_status(jobs, None) == 401
    assert http_status(jobs, "0" * 64) in (401, 403)
    assert http_status(jobs, head["token"]) == 200
    for target, call in ((head["gcs"], "gcs"), (head["client"], "client")):
        assert grpc_code(target, call, None)[0] == grpc.StatusCode.UNAUTHENTICATED, call
        assert grpc_code(target, call, "0" * 64)[0] == grpc.StatusCode.UNAUTHENTICATED, call
        assert grpc_code(target, call, head["token"])[0] != grpc.StatusCode.UNAUTHENTICATED, call


def test_job_without_token_refused_with_token_runs(head):
    """`ray job submit` from a machine without the token is refused; jobs/_submit.sh with the token
    (as `ray rsync-down` fetched it) runs, and the job's driver joins the cluster through GCS."""
    laptop = head["laptop_home"]
    submit = [str(BIN / "ray"), "job", "submit", "--address", head["url"], "--no-wait",
              "--submission-id", "emi-auth-refused", "--", "python", "-c", "print(1)"]
    r = subprocess.run(submit, env=clean_env(laptop), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and re.search(r"401|uthenticat", r.stdout + r.stderr), r.stdout + r.stderr
    r = subprocess.run(submit, env=clean_env(laptop, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr

    fetched = laptop / ".ray/emi-cluster-token"  # ray rsync-down ... /home/ubuntu/.ray/auth_token here
    r = subprocess.run(["bash", str(ROOT / "jobs/_submit.sh"), "auth", "--", "python", "-c", "print(1)"],
                       env=clean_env(laptop, RAY_ADDRESS=head["url"], RAY_AUTH_TOKEN_PATH=str(fetched)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "rsync-down" in r.stderr, r.stdout + r.stderr  # before fetching it
    fetched.parent.mkdir(exist_ok=True)
    shutil.copy(head["head_home"] / ".ray/auth_token", fetched)
    driver = "import ray; ray.init(); print('EMI_AUTH_OK', int(ray.cluster_resources()['CPU']))"
    r = subprocess.run(["bash", str(ROOT / "jobs/_submit.sh"), "auth", "--", "python", "-c", driver],
                       env=clean_env(laptop, RAY_ADDRESS=head["url"], RAY_AUTH_TOKEN_PATH=str(fetched)),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and "EMI_AUTH_OK" in r.stdout, (r.stdout + r.stderr)[-4000:]
    req = urllib.request.Request(f"{head['url']}/api/jobs/", headers={"Authorization": f"Bearer {head['token']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        jobs = json.loads(resp.read())
    ids = {j.get("submission_id") or "": j["status"] for j in jobs}
    assert "emi-auth-refused" not in ids  # the refused submissions never reached the cluster
    assert [s for i, s in ids.items() if i.startswith("emi-auth-")] == ["SUCCEEDED"], ids


def test_worker_joins_only_with_synced_token(head):
    """cluster.yaml's worker start command: refused without the token, joins with the copy
    cluster_synced_files puts in the worker's ~/.ray/auth_token."""
    assert "/home/ubuntu/.ray/auth_token" in CFG["cluster_synced_files"]
    root = head["root"]
    bare, synced = root / "worker-bare", root / "worker-synced"
    (synced / ".ray").mkdir(parents=True)
    bare.mkdir()
    shutil.copy(head["head_home"] / ".ray/auth_token", synced / ".ray/auth_token")
    worker_ports = {**new_ports(), "gcs": head["gcs"].rsplit(":", 1)[1]}  # its own ports, the head's GCS

    with (root / "worker-bare.log").open("w") as log:
        bare_worker = subprocess.Popen(["bash", "-c", start_command("worker", worker_ports, None)],
                                       env=clean_env(bare, RAY_HEAD_IP=head["ip"]), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
    head["procs"].append(bare_worker)
    try:
        rc = bare_worker.wait(timeout=90)
    except subprocess.TimeoutExpired:
        rc = None  # still running: it started (or hangs) without the token; teardown stops it
    said = (root / "worker-bare.log").read_text()
    assert rc not in (None, 0) and "token" in said.lower(), said[-3000:]
    deadline = time.time() + 60
    while alive_nodes(head["gcs"], head["token"]) < 1:  # the head's own node registers after the dashboard
        assert time.time() < deadline, "the head node never registered"
        time.sleep(0.5)
    assert alive_nodes(head["gcs"], head["token"]) == 1

    with (root / "worker.log").open("w") as log:
        w = subprocess.Popen(["bash", "-c", start_command("worker", worker_ports, None)],
                             env=clean_env(synced, RAY_HEAD_IP=head["ip"]), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    head["procs"].append(w)
    deadline = time.time() + 90
    while alive_nodes(head["gcs"], head["token"]) < 2:
        assert w.poll() is None and time.time() < deadline, (root / "worker.log").read_text()[-3000:]
        time.sleep(1)
    stop_session(w, signal.SIGTERM)
