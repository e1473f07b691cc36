"""Results on S3: a real S3-compatible server on loopback (moto's server, a separate process),
reached through pyarrow's S3 filesystem exactly as a cluster reaches AWS (AWS_ENDPOINT_URL
points it at 127.0.0.1). A study runs with `--storage s3://...`, then `study report` and
`study resume` read the same URI."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml

from test_study_integration import tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("moto_server") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "moto_server")),
    reason="moto[server] (test extra) is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3(tmp_path):
    port = _free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                               "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(tmp_path / "moto.log", "w"), stderr=subprocess.STDOUT)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
               PYTHONUNBUFFERED="1")
    import pyarrow.fs as pafs

    deadline = time.time() + 30
    while True:
        try:
            fs = pafs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                                   endpoint_override=f"127.0.0.1:{port}", scheme="http",
                                   allow_bucket_creation=True)
            fs.create_dir("studies-bucket")
            break
        except OSError:
            assert time.time() < deadline, (tmp_path / "moto.log").read_text()
            time.sleep(0.5)
    yield env, fs
    server.terminate()
    server.wait(10)


def _study(*args, env, check=0):
    p = subprocess.run([sys.executable, "-m", "study.cli", *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=400)
    assert p.returncode == check, f"rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def test_study_on_s3_then_report_and_resume_from_the_uri(s3, tiny_folder, tmp_path):
    env, fs = s3
    d = tiny_spec(tiny_folder, "unused", tmp_path / "cache", name="ons3", target_epochs=2)
    d["backbones"] = {"scratch_cnn": {"depths": [0, 2, 4]}}  # 3 cells x 1 trial
    d["search"]["trials_per_cell"] = 1
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(d))
    uri = "s3://studies-bucket/studies"
    _study("run", tmp_path / "spec.yaml", "--storage", uri, env=env)
    root = "studies-bucket/studies/ons3"
    import pyarrow.fs as pafs

    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(root))}
    assert {"study.yaml", "provenance.json", "summary.json", "sources"} <= names, names
    with fs.open_input_stream(f"{root}/summary.json") as f:
        summary = json.loads(f.read())
    assert summary["trials"] == 3 and summary["errored"] == 0
    # one source model, shared by every trial, kept with the study on S3
    keys = [i for i in fs.get_file_info(pafs.FileSelector(f"{root}/sources")) if i.type.name == "Directory"]
    assert len(keys) == 1
    with fs.open_input_stream(f"{keys[0].path}/users.txt") as f:
        assert len(f.read().decode().split()) == 3

    rep = _study("report", f"{uri}/ons3", "-o", tmp_path / "report", env=env)
    assert "3 trials" in rep.stdout or "trials" in rep.stdout
    assert (tmp_path / "report" / "report.html").exists()
    md = (tmp_path / "report" / "report.md").read_text()
    assert "source models (each once: 1)" in md
    res = _study("resume", f"{uri}/ons3", env=env)
    assert "training source model" not in res.stdout + res.stderr
    with fs.open_input_stream(f"{root}/summary.json") as f:
        assert json.loads(f.read())["trials"] == 3
