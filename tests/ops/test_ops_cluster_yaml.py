"""cluster.yaml validates against the autoscaler schema of the installed Ray (offline, no AWS calls)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster.yaml"


def _validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config  # private, but the only offline check

    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.fixture(scope="module")
def cfg() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_is_valid(cfg):
    _validate(cfg)


def test_cluster_yaml_shape(cfg):
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert "GPU" not in head["resources"] and head["max_workers"] == 0
    gpu = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert gpu and all(t["resources"].get("GPU", 0) >= 1 and t["min_workers"] == 0 for t in gpu)
    assert any(t["node_config"]["InstanceType"] == "g5.xlarge" for t in gpu)
    assert cfg["provider"]["type"] == "aws"
    assert "/home/ubuntu/emi-ray" in cfg["file_mounts"]


def test_cluster_yaml_pins_and_security(cfg):
    setup = "\n".join(cfg["setup_commands"])
    # Every install is pinned: uv by version and hash, Python by version, the rest by constraints.txt.
    assert "curl" not in setup and "| sh" not in setup and "wget" not in setup
    assert re.search(r"uv==\d+\.\d+\.\d+ --hash=sha256:[0-9a-f]{64}", setup) and "--require-hashes" in setup
    assert re.search(r"uv venv --python 3\.11\.\d+ --managed-python", setup)
    installs = [c for c in cfg["setup_commands"] if "uv pip install" in c]
    assert installs and all("-c /home/ubuntu/emi-ray/constraints.txt" in c for c in installs), installs
    assert any("-e /home/ubuntu/emi-ray" in c for c in installs)
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    for pin in ("torch==2.11.0", "torchvision==0.26.0", "torchaudio==2.11.0", "ray==2.60.0"):
        assert pin in pins, pin
    for c in installs:  # a package named on the command line must be locked too (boto3: the autoscaler)
        for name in re.findall(r"(?<=\s)([A-Za-z][\w.-]*)(?=\s|$)", c.split("-e /home/ubuntu/emi-ray", 1)[1]):
            assert any(line.lower().startswith(name.lower() + "==") for line in pins), name
    head = "\n".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # never 0.0.0.0: the jobs API runs anyone's code
    text = CLUSTER.read_text().lower()
    for secret in ("aws_secret_access_key:", "aws_access_key_id:", "password", "bearer "):
        assert secret not in text, secret


def test_cluster_yaml_token_auth(cfg):
    """The head makes the token and starts with token auth; workers get the token and use it
    (tests/ops/test_ops_cluster_auth.py runs these commands)."""
    assert any("ray get-auth-token --generate" in c and "umask 077" in c for c in cfg["head_setup_commands"])
    starts = {k: [c for c in cfg[f"{k}_start_ray_commands"] if "ray start" in c] for k in ("head", "worker")}
    for kind, cmds in starts.items():
        assert len(cmds) == 1 and cmds[0].startswith("export RAY_AUTH_MODE=token;"), kind
    assert cfg["cluster_synced_files"] == ["/home/ubuntu/.ray/auth_token"]
    jobs = (ROOT / "jobs/_submit.sh").read_text()
    assert 'RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"' in jobs


def test_cluster_yaml_security_group(cfg):
    """Only SSH from one set CIDR is open to the outside (jobs/aws_security_group.py enforces it)."""
    sg = cfg["provider"]["security_group"]
    assert sg["GroupName"] and sg["GroupName"] != "ray-autoscaler-" + cfg["cluster_name"]
    perms = sg["IpPermissions"]
    assert all((p["IpProtocol"], p["FromPort"], p["ToPort"]) == ("tcp", 22, 22) for p in perms)
    cidrs = [r["CidrIp"] for p in perms for r in p.get("IpRanges", [])]
    assert cidrs and not any(c.endswith("/0") for c in cidrs)
    assert not any(p.get("Ipv6Ranges") or p.get("UserIdGroupPairs") or p.get("PrefixListIds") for p in perms)
    for t in cfg["available_node_types"].values():  # no other group that could open ports
        assert "SecurityGroupIds" not in t["node_config"] and "NetworkInterfaces" not in t["node_config"]
    assert any("jobs/aws_security_group.py ~/ray_bootstrap_config.yaml" in c for c in cfg["head_setup_commands"])


@pytest.mark.parametrize("mutate, err", [
    (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="one"), "schema"),
    (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(CPU=0.5), "schema"),
    (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"), "schema"),
    (lambda c: c.update(setup_command=c.pop("setup_commands")), "schema"),
    (lambda c: c.update(head_node_type="no_such_type"), "value"),
    (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=99), "value"),
], ids=["gpu-not-int", "fractional-cpu", "no-node-config", "typo-key", "bad-head-type", "min-above-max"])
def test_cluster_yaml_mutations_rejected(cfg, mutate, err):
    import jsonschema

    bad = copy.deepcopy(cfg)
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError if err == "schema" else ValueError):
        _validate(bad)


def test_job_scripts_parse_and_submit_emi_ray():
    import subprocess

    scripts = {p.name: p for p in (ROOT / "jobs").glob("*.sh")}
    assert {"_submit.sh", "extract.sh", "tune.sh", "train_best.sh"} <= set(scripts)
    for name, p in scripts.items():
        assert subprocess.run(["bash", "-n", str(p)]).returncode == 0, name
        if name != "_submit.sh":
            text = p.read_text()
            assert "_submit.sh" in text and "emi-ray " in text, name
    assert "--best" in scripts["train_best.sh"].read_text()
    env = yaml.safe_load((ROOT / "jobs/runtime_env.yaml").read_text())
    assert ".git" in env["excludes"] and "EMI_RAY_HOME" in env["env_vars"]
