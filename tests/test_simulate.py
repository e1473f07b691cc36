"""The rehearsal (`study run --simulate`): the cost model's shape as pure functions, and a real
simulated study through the real driver, searcher, scheduler, source tasks, record and report,
which says SIMULATED wherever it reports."""
import json
import math
import subprocess
import sys

import pytest

from study.core import metrics as M
from trainables import simulate as S

from test_study_integration import tiny_spec

TARGET = ["dog", "frog", "horse", "ship", "truck"]


def _acc(**kw):
    a = dict(split="5to5", target_classes=TARGET, backbone="resnet18", init="source", depth=0,
             max_depth=5, lr=0.02, seed=0)
    a.update(kw)
    return S.final_accuracy(**a)


def test_cost_model_is_deterministic_and_shaped_as_documented():
    assert _acc() == _acc()  # a fixed function of its arguments: reruns and resumes agree
    # freezing more costs accuracy (averaged over seeds), ImageNet features less than a source's
    mean = lambda **kw: sum(_acc(seed=k, **kw) for k in range(40)) / 40  # noqa: E731
    src = [mean(depth=d, lr=0.02 * (1 + 3 * d / 5)) for d in range(6)]
    assert all(a > b for a, b in zip(src, src[1:]))
    img = [mean(init="imagenet", depth=d, lr=0.02 * (1 + 3 * d / 5)) for d in (0, 5)]
    assert img[0] - img[1] < src[0] - src[5]
    # a learning rate a decade off costs LR_COST; the scratch init ignores the frozen depth
    assert mean(lr=0.2) == pytest.approx(mean() - S.LR_COST, abs=0.002)
    assert _acc(init="scratch", depth=3) == _acc(init="scratch", depth=0)
    # a seed's noise is shared by its depths: paired differences vary less than accuracies
    diffs = [_acc(seed=k) - _acc(seed=k, depth=1, lr=0.032) for k in range(60)]
    accs = [_acc(seed=k) for k in range(60)]
    sd = lambda x: math.sqrt(sum((v - sum(x) / len(x)) ** 2 for v in x) / (len(x) - 1))  # noqa: E731
    assert sd(diffs) < 0.6 * sd(accs)
    # never below chance, never above 0.99; the curve rises to the final accuracy
    assert _acc(lr=1e-9) == pytest.approx(1 / 5)
    c = [S.curve(0.8, 0.2, e, 10, "k") for e in range(1, 11)]
    assert c[-1] == pytest.approx(0.8) and c[0] < c[4] < c[-1]


def test_simulated_study_runs_the_real_driver_and_says_simulated(tiny_folder, tmp_path, ray_local):
    from analysis.report import make_report
    from study.core.spec import load_spec_dict
    from study.runner import CHECKPOINTS_KEPT, run_study

    raw = tiny_spec(tiny_folder, tmp_path / "studies", tmp_path / "cache", name="sim",
                    confirm={"seeds": 2}, checkpoint_every=3)
    raw["backbones"] = {"scratch_cnn": {"depths": [0, 2, 4]}}
    raw["inits"] = ["source", "scratch"]
    spec = load_spec_dict(raw)
    summary = run_study(spec, log=lambda *a: None,
                        simulate={"flops_per_s": 1e9, "compression": 20.0})
    sdir = tmp_path / "studies" / "sim"
    assert summary["simulated"] is True and summary["errored"] == 0
    assert summary["cells_completed"] == summary["cells"] == 4
    prov = json.loads((sdir / "provenance.json").read_text())
    assert prov["simulated"]["compression"] == 20.0 and "train_images" not in prov["data"]
    sim = json.loads((sdir / S.SIMULATION_FILE).read_text())
    # durations: the plan's FLOPs per epoch / throughput / compression
    cell = "ab_cd/scratch_cnn/source/d2"
    # (training FLOPs, plus the validation pass's) / throughput / compression
    train_s = sim["epoch_flops"][cell] / 1e9 / 20.0
    assert train_s < sim["epoch_s"][cell] < 1.5 * train_s and sim["test_s"][cell] > 0
    rows = [json.loads(x) for f in sdir.glob("*/result.json") for x in f.read_text().splitlines()]
    assert rows and all(r["simulated"] for r in rows)
    # checkpoint_every 3 of 4 epochs: trials checkpointed at epochs 3 and 4 (Tune keeps the
    # last CHECKPOINTS_KEPT = 2), trials stopped before epoch 3 never
    assert CHECKPOINTS_KEPT == 2
    for f in sdir.glob("*/result.json"):
        last = json.loads(f.read_text().splitlines()[-1])[M.EPOCH]
        ck = sorted(p.name for p in f.parent.glob("checkpoint_*"))
        assert ck == {1: [], 2: [], 3: ["checkpoint_000000"],
                      4: ["checkpoint_000000", "checkpoint_000001"]}[last], (f.parent.name, last, ck)
    done = [r for r in rows if r.get(M.DONE)]
    assert done and all(0.5 <= r[M.TEST_ACC] <= 0.99 for r in done)
    # source models: simulated tasks, one per seed, shared by the seed's trials
    infos = [json.loads(p.read_text()) for p in (sdir / "sources").glob("*/info.json")]
    assert len(infos) == 3 and all(i["simulated"] for i in infos)
    # the report opens with the banner; so does its summary
    out, text = make_report(sdir, tmp_path / "r")
    md = (out / "report.md").read_text()
    assert "SIMULATED" in md.splitlines()[0]
    assert md.split("## 1. Answer: how much to freeze")[1].lstrip().startswith("SIMULATED STUDY")
    assert text.startswith("SIMULATED STUDY")


def test_simulate_options_need_simulate(tmp_path):
    r = subprocess.run([sys.executable, "-m", "study.cli", "run", "examples/quick.yaml",
                        "--compression", "5", "--storage", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "only apply with --simulate" in r.stderr
    r = subprocess.run([sys.executable, "-m", "study.cli", "run", "examples/quick.yaml",
                        "--simulate", "--compression", "0", "--storage", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--compression" in r.stderr and "'0' must be a number > 0" in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_larger_simulated_study_report_opens_in_chromium_with_every_figure_drawn(
        tiny_folder, tmp_path, ray_local):
    """2 splits x (scratch_cnn at depths 0-4 + scratch) = 12 cells, 3 seeds each: the report
    (one figure per split where it needs one) loads in headless Chromium with every image
    decoded, and no figure is blank."""
    import re

    import matplotlib.image as mpimg

    from analysis.report import make_report
    from study.core.spec import load_spec_dict
    from study.runner import run_study
    from test_analysis_report import CHROMIUM, PROBE

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian package 'chromium'; .ci/run installs it)")
    raw = tiny_spec(tiny_folder, tmp_path / "studies", tmp_path / "cache", name="wide",
                    confirm={"seeds": 2}, checkpoint_every=2)
    raw["splits"] = [{"name": "ab_cd", "source": ["a", "b"], "target": ["c", "d"]},
                     {"name": "cd_ab", "source": ["c", "d"], "target": ["a", "b"]}]
    raw["backbones"] = {"scratch_cnn": {"depths": [0, 1, 2, 3, 4]}}
    raw["inits"] = ["source", "scratch"]
    raw["search"]["max_concurrent"] = 4
    summary = run_study(load_spec_dict(raw), log=lambda *a: None,
                        simulate={"flops_per_s": 1e9, "compression": 40.0})
    assert summary["cells_completed"] == summary["cells"] == 12
    out, _ = make_report(tmp_path / "studies" / "wide", tmp_path / "r")
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 8
    for p in pngs:  # drawn: not one flat colour
        img = mpimg.imread(p)
        assert img.std() > 0.01, p.name
    page = tmp_path / "probe.html"
    page.write_text((out / "report.html").read_text().replace("<head>", "<head>" + PROBE, 1))
    shot = tmp_path / "shot.png"
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}", "--virtual-time-budget=5000"]
    r = subprocess.run(common + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                       timeout=90)
    m = re.search(r"<title>PROBE (.*?)</title>", r.stdout)
    assert m, f"page did not load: rc {r.returncode}\n{r.stderr[-2000:]}"
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert res["images"] == len(pngs) and res["broken"] == 0 and res["errors"] == [], res
    subprocess.run(common + ["--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=90)
    assert shot.exists() and mpimg.imread(shot).std() > 0.01  # the page rendered, not blank
