"""How well ``study plan`` priced a finished study: its device time against the slot-seconds the
study measured.

    python benchmarks/plan_accuracy.py STUDY_DIR [--flops-per-s F]

Measured (from the study's record and its source models): every trial's ``epoch_s`` (training +
validation of each epoch) + ``test_s`` + every source model's ``train_s``. A simulated study
(``study run --simulate``) is measured the same way; its times are the plan's FLOPs by
construction, so it checks the counting, not the probe.

The plan is made again from the study's resolved spec (``study.yaml``), at the throughput of this
machine (its probe) or ``--flops-per-s``, on the number of training images per class the study
had. Run it on the machine the study ran on, when it is otherwise idle.

Printed (name=value, headline last):
- ``plan_s`` / ``actual_s``: the plan's expected device seconds (early stopping as planned,
  the minimum confirmation seeds; racing studies also ``plan_ceiling_s``) and the measured ones.
- ``repriced_over_actual``: the plan's seconds per epoch, per test pass and per source model
  applied to the epochs this study actually ran (what the probe and the cost formula get right or
  wrong, whatever early stopping and racing did).
- ``plan_over_actual``: plan_s / actual_s.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measured(sdir: Path, target_epochs: int) -> dict:
    """Measured slot-seconds: trials (epoch_s + test_s) and source models (train_s); epochs run
    and completed trials per cell."""
    from study.core import metrics as M
    from study.recorder import read_record

    epoch_s = test_s = 0.0
    epochs: dict = {}
    tests: dict = {}
    seen: set = set()
    cell_of: dict = {}
    for e in read_record(str(sdir)):
        if e.get("event") == "start":
            cell_of[e["trial_id"]] = e.get("cell") or (e.get("config") or {}).get(M.CELL)
        if e.get("event") != "result":
            continue
        key = (e["trial_id"], e.get(M.EPOCH))
        if key in seen:  # a re-reported epoch (resume) counts once
            continue
        seen.add(key)
        cell = cell_of.get(e["trial_id"]) or e.get(M.CELL)
        epoch_s += float(e.get(M.EPOCH_S) or 0.0)
        epochs[cell] = epochs.get(cell, 0) + 1
        if e.get(M.TEST_S) is not None:
            test_s += float(e[M.TEST_S])
            tests[cell] = tests.get(cell, 0) + 1
    source_s = 0.0
    n_src = 0
    for f in (sdir / "sources").glob("*/info.json"):
        source_s += float(json.loads(f.read_text()).get("train_s") or 0.0)
        n_src += 1
    return {"epoch_s": epoch_s, "test_s": test_s, "source_s": source_s, "sources": n_src,
            "epochs": epochs, "tests": tests, "actual_s": epoch_s + test_s + source_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study")
    ap.add_argument("--flops-per-s", type=float, default=None)
    args = ap.parse_args()

    from study.core.spec import load_spec
    from study.plan import make_plan

    sdir = Path(args.study).resolve()
    spec = load_spec(sdir / "study.yaml")
    prov = json.loads((sdir / "provenance.json").read_text())
    per_class = None
    classes = (prov.get("data") or {}).get("classes") or []
    n_train = (prov.get("data") or {}).get("train_images")
    n_val = (prov.get("data") or {}).get("val_images")
    n_test = (prov.get("data") or {}).get("test_images")
    test_per_class = None
    if n_train and classes:  # images per class, as the study had them (after its caps)
        per_class = int(round((n_train + (n_val or 0)) / len(classes)))
    if n_test and classes and not spec.data.max_test_per_class:
        test_per_class = int(round(n_test / len(classes)))
    plan = make_plan(spec, per_class=per_class, flops_per_s=args.flops_per_s, log=lambda *a: None,
                     test_per_class=test_per_class)
    m = measured(sdir, spec.target_epochs)
    cells = {r["cell"]: r for r in plan["cells"]}
    repriced = sum(n * cells[c]["epoch_s"] for c, n in m["epochs"].items() if c in cells)
    repriced += sum(n * cells[c]["test_s"] for c, n in m["tests"].items() if c in cells)
    src = plan["source_jobs"]
    repriced += m["sources"] * (sum(j["seconds"] for j in src) / len(src) if src else 0.0)
    plan_s = plan["device_s"]["halving"]
    print(f"study {sdir.name}: measured {m['actual_s']:.0f} s (epochs {m['epoch_s']:.0f} s, "
          f"tests {m['test_s']:.0f} s, {m['sources']} source models {m['source_s']:.0f} s); "
          f"plan ({plan['throughput']} throughput) {plan_s:.0f} s expected"
          + (f", {plan['device_s']['ceiling']:.0f} s at the racing ceiling" if plan["racing"] else ""))
    print(f"plan_s={plan_s:.1f}")
    if plan["racing"]:
        print(f"plan_ceiling_s={plan['device_s']['ceiling']:.1f}")
    print(f"actual_s={m['actual_s']:.1f}")
    print(f"repriced_over_actual={repriced / m['actual_s']:.3f}")
    print(f"plan_over_actual={plan_s / m['actual_s']:.3f}")


if __name__ == "__main__":
    main()
