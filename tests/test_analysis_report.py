"""`study report` / `study compare` on a real tiny study (local Ray, ASHA), run once per module;
the HTML is opened in headless chromium when it is installed."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from study.cli import main
from study.runner import run_study
from study.core.spec import load_spec_dict

SECTIONS = ("1. Answer: how much to freeze", "2. When transfer pays",
            "3. Cells: coverage and runs",
            "4. Accuracy vs frozen depth", "5. Transfer gain over scratch",
            "6. Accuracy vs compute: Pareto frontier of cells", "7. Finalists",
            "8. Early-stopping accounting: ASHA", "9. Provenance")
COMPARE_SECTIONS = ("1. Studies", "2. Answer per study", "3. Differences",
                    "4. Accuracy vs frozen depth", "5. Transfer gain over scratch",
                    "6. Accuracy vs compute", "7. Finalists", "8. Early-stopping accounting",
                    "9. Provenance")
CHROMIUM = Path("/usr/bin/chromium")


def _spec(data_root: Path, storage: Path, cache: Path, name="rep") -> dict:
    # grid: scratch_cnn source at depths 0..2 and a scratch baseline (4 cells, 1 lr each), then
    # each cell's lr with 1 more seed: 8 trials, 3 epochs
    return {
        "name": name,
        "data": {"root": str(data_root), "cache_dir": str(cache), "image_size": 16,
                 "val_fraction": 0.25},
        "splits": [{"name": "ab_cd", "source": ["a", "b"], "target": ["c", "d"]}],
        "backbones": {"scratch_cnn": {"frozen_depth": [0, 2]}},
        "inits": ["source", "scratch"],
        "lr": {"low": 0.01, "high": 0.1, "grid": [0.05]},
        "batch_size": 16, "target_epochs": 3, "source": {"epochs": 1, "lr": 0.05},
        "search": {"algorithm": "grid", "num_samples": 4, "max_concurrent": 2, "seed": 1},
        "confirm": {"seeds": 1},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "storage": str(storage), "max_failures": 0,
    }


@pytest.fixture(scope="module")
def study(tiny_folder, tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("rstudy")
    summary = run_study(load_spec_dict(_spec(tiny_folder, base / "storage", base / "cache")))
    return Path(summary["results"])


@pytest.fixture(scope="module")
def other_study(study, tmp_path_factory):
    """A second study for compare: a copy under another name and creation time."""
    d = tmp_path_factory.mktemp("other") / "rep2"
    shutil.copytree(study, d)
    (d / "study.yaml").write_text((d / "study.yaml").read_text().replace("name: rep", "name: rep2"))
    prov = json.loads((d / "provenance.json").read_text())
    prov.update(study="rep2", created="2000-01-01T00:00:00+00:00")
    (d / "provenance.json").write_text(json.dumps(prov))
    return d


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "out"
    assert main(["report", str(study), "-o", str(out)]) == 0
    return out


def test_report_has_every_section_and_output(report, study, capsys):
    md, htm = (report / "report.md").read_text(), (report / "report.html").read_text()
    for s in SECTIONS:
        assert f"## {s}" in md, s
        assert s in htm, s
    for f in ("trials.csv", "epochs.csv", "trials.parquet", "epochs.parquet", "report.json",
              "frontier_ab_cd.png", "depth.png", "learning.png", "early_stopping.png"):
        assert (report / f).stat().st_size > 0, f
    trials = pd.read_parquet(report / "trials.parquet")
    assert len(trials) == 8 == len(pd.read_csv(report / "trials.csv"))
    assert set(trials["status"]) <= {"completed", "stopped"} and "completed" in set(trials["status"])
    epochs = pd.read_parquet(report / "epochs.parquet")
    assert len(epochs) == trials["epochs"].sum()
    assert {"scratch", "source"} == set(trials["init"])
    # the scheduler that ran (spec scheduler.type asha) is the one named
    assert "; early stopping: ASHA. Cells:" in md and "stopped by ASHA" in md
    assert "halving" not in md.split("## 9. Provenance")[0]
    # self-contained: figures embedded, nothing fetched from anywhere
    assert htm.count("<img src='data:image/png;base64,") >= 4
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", htm)
    # the best trial's confusion matrix and per-class table
    assert "confusion_ab_cd.png" in md and "per-class test metrics" in md
    marker = json.loads((report / "report.json").read_text())
    assert marker["studies"][0]["name"] == "rep" and marker["kind"] == "report"


def test_report_prints_summary(study, tmp_path, capsys):
    assert main(["report", str(study), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "study rep: 8 trials" in out and "ab_cd" in out and "savings x" in out
    assert "early stopping: ASHA;" in out


def test_report_refuses_other_studys_report(report, other_study, capsys):
    before = (report / "report.html").read_bytes()
    assert main(["report", str(other_study), "-o", str(report)]) == 2
    err = capsys.readouterr().err
    assert str(report) in err and "'rep'" in err and "--force" in err
    assert (report / "report.html").read_bytes() == before
    # the same study again is fine (an update); --force overrides
    assert main(["report", str(other_study), "-o", str(report), "--force"]) == 0
    assert json.loads((report / "report.json").read_text())["studies"][0]["name"] == "rep2"


def test_compare_side_by_side(study, other_study, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(study), str(other_study), "-o", str(out)]) == 0
    md = (out / "report.md").read_text()
    for s in COMPARE_SECTIONS:
        assert f"## {s}" in md, s
    assert "rep2" in md and (out / "compare_frontier_ab_cd.png").stat().st_size > 0
    assert (out / "compare_1_learning.png").stat().st_size > 0
    assert "Best completed trial per study and split" in md
    t = pd.read_parquet(out / "trials.parquet")
    assert set(t["study"]) == {"rep", "rep2"} and len(t) == 16
    assert "+0.0 pp" in md  # identical results: no difference in accuracy


def test_partial_study_is_reported_as_such(study, tmp_path, capsys):
    d = tmp_path / "partial"
    shutil.copytree(study, d)
    (d / "summary.json").unlink()
    for f in d.glob("experiment_state*.json"):
        f.unlink()
    done = [p for p in d.glob("*/result.json") if len(p.read_text().splitlines()) == 3]
    rj = done[0]
    rj.write_text(rj.read_text().splitlines()[0] + "\n")  # as if interrupted after epoch 1
    assert main(["report", str(d), "-o", str(tmp_path / "o")]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "PARTIAL RESULTS" in md and rj.parent.name.split("_")[0] in md
    assert "PARTIAL" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["not_study", "empty", "unreadable"])
def test_report_errors_exit_2_naming_the_path(study, tmp_path, capsys, case):
    if case == "not_study":
        d = tmp_path / "plain"
        d.mkdir()
        named = d
    elif case == "empty":
        d = tmp_path / "empty"
        d.mkdir()
        shutil.copy(study / "study.yaml", d / "study.yaml")
        named = d
    else:
        d = tmp_path / "bad"
        shutil.copytree(study, d)
        named = sorted(d.glob("*/result.json"))[0]
        named.write_text("garbage\n" + named.read_text())
    assert main(["report", str(d), "-o", str(tmp_path / "o")]) == 2
    assert str(named) in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.html").exists()


def test_compare_error_exit_2(study, tmp_path, capsys):
    assert main(["compare", str(study), str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err


PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e.target && e.target.tagName)); }, true);
var _ce = console.error; console.error = function () { window.__errors.push(Array.from(arguments).join(' ')); _ce.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  document.title = 'PROBE ' + JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors});
});
</script>"""


def test_html_opens_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian package 'chromium'; .ci/run installs it)")
    page = tmp_path / "probe.html"
    page.write_text((report / "report.html").read_text().replace("<head>", "<head>" + PROBE, 1))
    r = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
                        "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0",
                        "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"<title>PROBE (.*?)</title>", r.stdout)
    assert m, f"page did not load: rc {r.returncode}\n{r.stderr[-2000:]}"
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert res["images"] >= 4 and res["broken"] == 0, res
    assert res["errors"] == [], res
    console = [x for x in r.stderr.splitlines() if "CONSOLE" in x and "ERROR" in x.upper()]
    assert not console, console
