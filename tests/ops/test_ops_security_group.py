"""jobs/aws_security_group.py against a mocked EC2 (moto, in process): the group cluster.yaml names
admits SSH from the configured CIDR and traffic from its own members, nothing else, and Ray's own
`ray up` bootstrap (`_configure_subnet`, `_configure_security_group`) then uses it unchanged.

No AWS account, no network: moto answers the boto3 calls; the credentials are dummies."""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import yaml
from ops_util import ROOT

moto = pytest.importorskip("moto")

CIDR = "52.10.20.30/32"  # "your address" (not a documentation range)


def _load_script():
    spec = importlib.util.spec_from_file_location("aws_security_group", ROOT / "jobs/aws_security_group.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sg_script = _load_script()


@pytest.fixture
def aws(monkeypatch):
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    from ray.autoscaler._private.aws import utils as aws_utils

    aws_utils.resource_cache.cache_clear()  # Ray caches boto3 resources; make them inside the mock
    aws_utils.client_cache.cache_clear()
    with moto.mock_aws():
        yield
    aws_utils.resource_cache.cache_clear()
    aws_utils.client_cache.cache_clear()


def cluster_cfg(cidr: str | None = CIDR) -> dict:
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    if cidr:
        cfg["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] = cidr
    return cfg


def ray_up_bootstrap(cfg: dict) -> dict:
    """What `ray up` does to the network config (subnets, then security groups), with Ray's own code."""
    from ray.autoscaler._private.aws.config import _configure_security_group, _configure_subnet

    return _configure_security_group(_configure_subnet(copy.deepcopy(cfg)))


def inbound(cfg: dict, group_id: str) -> set:
    import boto3

    sg = boto3.resource("ec2", region_name=cfg["provider"]["region"]).SecurityGroup(group_id)
    sg.reload()
    return sg_script.flatten(sg.ip_permissions)


def test_script_closes_group_and_ray_up_uses_it(aws, capsys):
    cfg = cluster_cfg()
    assert sg_script.main([str(ROOT / "cluster.yaml"), "--dry-run"]) == 2  # the shipped placeholder is refused
    assert "placeholder" in capsys.readouterr().err

    first = sg_script.ensure_group(cfg)
    gid = first["group_id"]
    expected = {("tcp", 22, 22, "cidr", CIDR), ("-1", None, None, "group", gid)}
    assert inbound(cfg, gid) == expected
    assert sg_script.ensure_group(cfg) == {**first, "authorized": [], "revoked": []}  # idempotent

    booted = ray_up_bootstrap(cfg)
    for name, t in booted["available_node_types"].items():
        assert t["node_config"]["SecurityGroupIds"] == [gid], name  # head and workers: this group
    assert inbound(cfg, gid) == expected  # Ray added nothing (no SSH from 0.0.0.0/0)
    world = [r for r in inbound(cfg, gid) if r[3] in ("cidr", "cidr6") and r[4].endswith("/0")]
    assert not world


def test_script_repairs_group_ray_up_opened(aws):
    """`ray up` without the script first: Ray makes the group with SSH from 0.0.0.0/0. The script
    (as the head runs it on its bootstrap config, whose node types name their subnets) revokes it."""
    cfg = cluster_cfg()
    booted = ray_up_bootstrap(cfg)
    gid = booted["available_node_types"][cfg["head_node_type"]]["node_config"]["SecurityGroupIds"][0]
    assert ("tcp", 22, 22, "cidr", "0.0.0.0/0") in inbound(cfg, gid)  # why the script exists

    result = sg_script.ensure_group(booted)
    assert result["group_id"] == gid and ["tcp", 22, 22, "cidr", "0.0.0.0/0"] in result["revoked"]
    assert inbound(cfg, gid) == {("tcp", 22, 22, "cidr", CIDR), ("-1", None, None, "group", gid)}


@pytest.mark.parametrize("perm, why", [
    ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "whole internet"),
    ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, "whole internet"),
    ({"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": CIDR}]}, "only SSH"),
    ({"IpProtocol": "-1", "IpRanges": [{"CidrIp": CIDR}]}, "only SSH"),
    ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "198.51.100.0/24"}]},
     "placeholder"),
], ids=["ssh-world-v4", "ssh-world-v6", "dashboard", "all-ports", "doc-range"])
def test_script_refuses_open_rules(aws, perm, why):
    cfg = cluster_cfg()
    cfg["provider"]["security_group"]["IpPermissions"].append(perm)
    with pytest.raises(sg_script.RefusedRule, match=why):
        sg_script.ensure_group(cfg)
    no_name = cluster_cfg()
    del no_name["provider"]["security_group"]
    with pytest.raises(sg_script.RefusedRule, match="GroupName"):
        sg_script.ensure_group(no_name)


def test_script_runs_as_a_command():
    import subprocess

    r = subprocess.run([sys.executable, str(ROOT / "jobs/aws_security_group.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SSH" in r.stdout
