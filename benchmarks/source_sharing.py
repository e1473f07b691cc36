"""Source-model sharing: how many source models a study trained, how many trials used each, and
the compute that sharing saved (or, for models no trial used, wasted).

    python benchmarks/source_sharing.py STUDY_DIR [STUDY_DIR ...] [--json OUT]

A trial with init ``source`` needs a model trained on the source classes. Trials with the same
source key (data, split, backbone, stem, source hyperparameters, seed) share one: the study
trains every key it may need once, as its own Ray task, submitted up front
(``study.sources.SourceModels``; with racing, up to the ceiling's seeds), and its trials only
load it (``trainables.trainable.obtain_source_model``, which appends the trial to
``users.txt``). This script reads a finished study directory (no Ray, no training) and prints,
per source key: the trials that used it (``sources/<key>/users.txt``), whether a model was
trained (``sources/<key>/model.pt``), its training FLOPs and seconds (``info.json``), and

    compute saved = (trials using the source - source trainings performed) x source FLOPs

i.e. what the study would have spent if every trial trained its own source model, minus what it
did spend. A model trained that no trial used (a racing seed never raced, cells whose trials all
errored, a time budget spent first) counts as negative: its training was wasted; the totals line
gives these apart. The totals line also gives the saving as a share of the compute the study
would have needed without sharing (target FLOPs of all trials + every trial's own source
training). ``benchmarks/asha_vs_fifo.py`` prints the same table for both of its studies.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def source_sharing(study_dir) -> dict:
    """Per-key and total source accounting for one study directory (local path)."""
    from analysis.load import load_study
    from study.core.layout import SOURCES_DIR
    from study.core import metrics as M

    study = load_study(study_dir)
    t = study.trials
    src_trials = t[(t[M.INIT] == "source") & (t["epochs"] > 0)]
    keys = []
    for key, info in sorted(study.sources.items()):
        trained = (Path(study_dir) / SOURCES_DIR / key / "model.pt").is_file()
        users = len(info.get("users", []))
        flops = float(info.get("flops", 0.0) or 0.0)
        keys.append({"key": key, "users": users, "trainings": int(trained), "flops": flops,
                     "train_s": float(info.get("train_s", float("nan"))),
                     "val_acc": info.get("val_acc"),
                     "saved_flops": (users - int(trained)) * flops})
    target = float(t[M.TARGET_FLOPS].fillna(0).sum())
    spent_source = sum(k["trainings"] * k["flops"] for k in keys)
    saved = sum(k["saved_flops"] for k in keys)
    unused = [k for k in keys if k["trainings"] and not k["users"]]
    return {
        "study": str(study_dir), "trials": int(len(t)),
        "trials_using_source": int(len(src_trials)),
        "source_users": sum(k["users"] for k in keys),
        "source_trainings": sum(k["trainings"] for k in keys),
        "unused_trainings": len(unused), "unused_flops": sum(k["flops"] for k in unused),
        "target_flops": target, "source_flops_spent": spent_source, "saved_flops": saved,
        "saved_share": saved / (target + spent_source + saved) if target + spent_source + saved else 0.0,
        "keys": keys,
    }


def print_sharing(r: dict, title: str | None = None) -> None:
    print(f"\nsource sharing: {title or r['study']}")
    print(f"  {'source key':<36}{'users':>6}{'trained':>8}{'GFLOP/source':>14}"
          f"{'train s':>9}{'saved GFLOP':>13}")
    for k in r["keys"]:
        print(f"  {k['key']:<36}{k['users']:>6}{k['trainings']:>8}{k['flops'] / 1e9:>14.1f}"
              f"{k['train_s']:>9.1f}{k['saved_flops'] / 1e9:>13.1f}")
    print(f"  trials {r['trials']}, using a source model {r['trials_using_source']} "
          f"(users.txt entries {r['source_users']}), source trainings performed "
          f"{r['source_trainings']}, of which no trial used {r['unused_trainings']} "
          f"({r['unused_flops'] / 1e9:.1f} GFLOP, counted in the saving as negative)")
    print(f"  compute saved = (users - trainings) x source FLOPs = {r['saved_flops'] / 1e9:.1f} "
          f"GFLOP = {100 * r['saved_share']:.1f}% of the study's compute without sharing "
          f"(target {r['target_flops'] / 1e9:.1f} + sources spent "
          f"{r['source_flops_spent'] / 1e9:.1f} GFLOP)")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="+", help="study directories (<storage>/<name>)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args()
    out = []
    for s in args.studies:
        r = source_sharing(s)
        print_sharing(r)
        out.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
