#!/usr/bin/env python3
"""Make the cluster's AWS security group admit exactly: SSH from your CIDR, and the cluster itself.

    python jobs/aws_security_group.py cluster.yaml          # before `ray up` (docs/cluster.md, step 0)

Ray 2.60 creates the group `provider.security_group.GroupName` only if it does not exist,
and then always adds SSH from 0.0.0.0/0 to the rules of `provider.security_group.IpPermissions`;
a group that exists and has rules is used as it is. So this script creates (or repairs) the
group first, in the VPC `ray up` will use, with inbound rules

  - all traffic from members of the group (head <-> workers: GCS, object manager, SSH from
    the autoscaler on the head), and
  - the rules of `provider.security_group.IpPermissions`, which may only be TCP 22 from
    IPv4/IPv6 ranges narrower than /0 (and not the documentation placeholder),

and revokes every other inbound rule (in particular the 0.0.0.0/0 SSH rule of a group that
`ray up` made before this script ran). The head runs it again on its bootstrap config during
`ray up` (cluster.yaml, head_setup_commands), so the group is closed even if step 0 was skipped.

AWS credentials and region: the standard boto3 sources (AWS_PROFILE, instance role, ...) and
`provider.region`. Idempotent: a second run changes nothing. Exit status 2 on a rule it refuses.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import sys
from pathlib import Path

import yaml

# RFC 5737 / RFC 3849 documentation ranges: cluster.yaml ships one as the placeholder CIDR.
DOC_RANGES = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                "2001:db8::/32")]

Rule = tuple  # (protocol, from_port, to_port, kind, value); kind in cidr | cidr6 | group | prefix


class RefusedRule(ValueError):
    pass


def group_name(cfg: dict) -> str:
    name = cfg["provider"].get("security_group", {}).get("GroupName")
    if not name:
        raise RefusedRule("cluster.yaml has no provider.security_group.GroupName: Ray would make a group "
                          "with SSH open to 0.0.0.0/0")
    return name


def _ports(p: dict) -> tuple:
    proto = str(p.get("IpProtocol", "-1"))
    if proto == "-1":
        return proto, None, None
    return proto, p.get("FromPort"), p.get("ToPort")


def flatten(perms: list[dict]) -> set[Rule]:
    """EC2 IpPermissions (as in boto3 and cluster.yaml) -> one tuple per (ports, source)."""
    out = set()
    for p in perms:
        head = _ports(p)
        out |= {(*head, "cidr", r["CidrIp"]) for r in p.get("IpRanges", [])}
        out |= {(*head, "cidr6", r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])}
        out |= {(*head, "group", g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
        out |= {(*head, "prefix", g["PrefixListId"]) for g in p.get("PrefixListIds", [])}
    return out


def unflatten(rule: Rule) -> dict:
    proto, lo, hi, kind, value = rule
    p: dict = {"IpProtocol": proto}
    if lo is not None:
        p.update(FromPort=lo, ToPort=hi)
    key, item = {"cidr": ("IpRanges", "CidrIp"), "cidr6": ("Ipv6Ranges", "CidrIpv6"),
                 "group": ("UserIdGroupPairs", "GroupId"), "prefix": ("PrefixListIds", "PrefixListId")}[kind]
    p[key] = [{item: value}]
    return p


def outside_rules(cfg: dict) -> set[Rule]:
    """The rules cluster.yaml asks for (provider.security_group.IpPermissions), checked."""
    perms = cfg["provider"].get("security_group", {}).get("IpPermissions", [])
    rules = flatten(perms)
    if not rules:
        raise RefusedRule("provider.security_group.IpPermissions is empty: set the SSH rule for your CIDR")
    for proto, lo, hi, kind, value in sorted(rules, key=str):
        where = f"{proto} {lo}-{hi} from {value}"
        if (proto, lo, hi) != ("tcp", 22, 22):
            raise RefusedRule(f"refused {where}: only SSH (tcp 22) may be opened to the outside")
        if kind not in ("cidr", "cidr6"):
            raise RefusedRule(f"refused {where}: give SSH sources as CIDR ranges")
        net = ipaddress.ip_network(value, strict=False)
        if net.prefixlen == 0:
            raise RefusedRule(f"refused {where}: SSH open to the whole internet")
        if any(net.version == d.version and net.subnet_of(d) for d in DOC_RANGES):
            raise RefusedRule(f"refused {where}: that is cluster.yaml's placeholder; set your own address "
                              "(e.g. `curl -s https://checkip.amazonaws.com`/32) in "
                              "provider.security_group.IpPermissions")
    return rules


def cluster_vpc(cfg: dict) -> str:
    """The VPC of the nodes: their SubnetIds (a bootstrapped config) or the subnets `ray up` would pick."""
    from ray.autoscaler._private.aws.config import _configure_subnet, _resource

    node_configs = [t["node_config"] for t in cfg["available_node_types"].values()]
    if not all("SubnetIds" in n for n in node_configs):
        cfg = _configure_subnet(copy.deepcopy(cfg))  # Ray's own choice, as in `ray up`
        node_configs = [t["node_config"] for t in cfg["available_node_types"].values()]
    ec2 = _resource("ec2", cfg)
    vpcs = {ec2.Subnet(n["SubnetIds"][0]).vpc_id for n in node_configs}
    if len(vpcs) != 1:
        raise RefusedRule(f"the node types' subnets are in more than one VPC: {sorted(vpcs)}")
    return vpcs.pop()


def ensure_group(cfg: dict, dry_run: bool = False) -> dict:
    """Create or repair the group; return {"group_id", "vpc_id", "authorized", "revoked"}."""
    from ray.autoscaler._private.aws.config import _resource

    name, wanted_outside = group_name(cfg), outside_rules(cfg)
    vpc_id = cluster_vpc(cfg)
    ec2 = _resource("ec2", cfg)
    found = list(ec2.security_groups.filter(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                     {"Name": "group-name", "Values": [name]}]))
    if found:
        sg = found[0]
    elif dry_run:
        return {"group_id": None, "vpc_id": vpc_id, "authorized": sorted(map(list, wanted_outside)), "revoked": []}
    else:
        sg = ec2.create_security_group(GroupName=name, VpcId=vpc_id,
                                       Description="emi-ray cluster: SSH from one CIDR, all traffic within the group")
    wanted = wanted_outside | {("-1", None, None, "group", sg.id)}
    sg.reload()
    have = flatten(sg.ip_permissions)
    revoke, authorize = sorted(have - wanted, key=str), sorted(wanted - have, key=str)
    if not dry_run:
        if revoke:
            sg.revoke_ingress(IpPermissions=[unflatten(r) for r in revoke])
        if authorize:
            sg.authorize_ingress(IpPermissions=[unflatten(r) for r in authorize])
    return {"group_id": sg.id, "vpc_id": vpc_id, "authorized": [list(r) for r in authorize],
            "revoked": [list(r) for r in revoke]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="cluster.yaml (or the head's ~/ray_bootstrap_config.yaml)")
    ap.add_argument("--dry-run", action="store_true", help="print the changes, make none")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.expanduser().read_text())  # the bootstrap config is JSON, a YAML subset
    try:
        result = ensure_group(cfg, dry_run=args.dry_run)
    except RefusedRule as e:
        print(f"aws_security_group: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
