"""The cluster-launcher configs (cluster*.yaml) pass Ray's own config preparation and schema
validation, typos are rejected, and the security/placement rules the files promise hold.

`prepare_config` + `validate_config` are what `ray up` runs before it touches a provider; for aws and
gcp they only merge the provider's defaults.yaml and check the JSON schema (the cloud is contacted
later, in the provider's bootstrap step). The tests prove it: no cloud SDK is needed (boto3 and
googleapiclient are not installed in the dev venv) and a socket guard fails on any connection.
Provider-specific blocks such as `node_config` are free-form in Ray's schema: a typo inside them is
only caught by the cloud at launch time.
"""
import copy
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml

from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parent.parent
CLOUD = ("cluster.yaml", "cluster-gcp.yaml")
FILES = CLOUD + ("cluster-onprem.yaml",)


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, address):
        raise AssertionError(f"cluster config validation tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def prepared(config: dict) -> dict:
    out = prepare_config(copy.deepcopy(config))
    validate_config(out)
    return out


@pytest.mark.parametrize("name", FILES)
def test_ray_accepts_cluster_file(name, no_network):
    config = prepared(load(name))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    if name in CLOUD:
        workers = [t for n, t in types.items() if n != config["head_node_type"]]
        assert workers and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)
        assert config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("typo", ["auth", "top-level"])
def test_ray_rejects_a_typo(name, typo, no_network):
    config = load(name)
    if typo == "auth":
        config["auth"]["ssh_usr"] = config["auth"].pop("ssh_user")
    else:
        config["idle_timout_minutes"] = config.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError, match="ssh_usr|idle_timout_minutes"):
        prepared(config)


def _commands(config: dict, key: str) -> str:
    return "\n".join(config[key])


@pytest.mark.parametrize("name", FILES)
def test_token_auth_private_dashboard_cpu_head(name):
    config = load(name)
    head, workers = (_commands(config, "head_start_ray_commands"),
                     _commands(config, "worker_start_ray_commands"))
    for cmds in (head, workers):
        assert "export RAY_AUTH_MODE=token;" in cmds
    start_head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--num-cpus=0" in start_head, "the head must not run trials"
    assert "--dashboard-port=8265" in start_head
    assert not re.search(r"--dashboard-host[= ]+(0\.0\.0\.0|::)", head), "dashboard must stay on 127.0.0.1"
    # The token reaches every node, the project too; nothing opens 8265 to the world.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert config["file_mounts"]["~/tl-study"] == "."
    assert any("pip install" in c and "-e ~/tl-study" in c for c in config["setup_commands"])
    assert "8265" not in yaml.safe_dump(config["provider"])
    assert ".gitignore" in config["rsync_filter"]


def test_cloud_storage_and_gpu_workers():
    aws, gcp = load("cluster.yaml"), load("cluster-gcp.yaml")
    raw_aws, raw_gcp = (REPO / "cluster.yaml").read_text(), (REPO / "cluster-gcp.yaml").read_text()
    assert "s3://$STUDY_BUCKET/" in raw_aws and "gs://$STUDY_BUCKET/" in raw_gcp
    for config in (aws, gcp):
        assert any("STUDY_BUCKET=" in c for c in config["setup_commands"])
    aws_gpu = aws["available_node_types"]["gpu_1x"]["node_config"]
    assert aws_gpu["InstanceType"].startswith(("g", "p")) and "IamInstanceProfile" in aws_gpu
    assert "InstanceMarketOptions" in raw_aws  # the (commented-out) spot option
    gcp_gpu = gcp["available_node_types"]["gpu_1x"]
    assert gcp_gpu["resources"]["GPU"] == gcp_gpu["node_config"]["guestAccelerators"][0]["acceleratorCount"]


@pytest.mark.parametrize("name", FILES)
def test_every_command_is_valid_shell(name):
    """YAML ends a plain scalar at ' #', which silently cuts a command short (an unbalanced
    quote then fails on the node, minutes into `ray up`); bash -n finds it here."""
    import subprocess

    cfg = load(name)
    for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in cfg.get(key) or []:
            p = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert p.returncode == 0, f"{name}: {key}: {cmd!r}: {p.stderr}"
