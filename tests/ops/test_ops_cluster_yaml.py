"""cluster.yaml validates against the autoscaler schema of the installed Ray (offline, no AWS calls)."""

from __future__ import annotations

import copy
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
    for pin in ('"torch==2.11.0"', '"torchvision==0.26.0"', '"torchaudio==2.11.0"',
                '"ray[tune,train,data,default]==2.60.0"', "-e /home/ubuntu/emi-ray"):
        assert pin in setup, pin
    head = "\n".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # never 0.0.0.0: the jobs API runs anyone's code
    text = CLUSTER.read_text().lower()
    for secret in ("aws_secret_access_key:", "aws_access_key_id:", "password", "bearer "):
        assert secret not in text, secret


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
