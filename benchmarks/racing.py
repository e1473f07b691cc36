"""Racing confirmation seeds for decisive answers, measured on synthetic groups.

    python benchmarks/racing.py [--groups 2000] [--seed 0] [--tolerance 0.02] \\
        [--sds 0.01 0.015 0.02] [--seeds 2] [--max-seeds 6] [--alpha 0.05] [--json OUT]

No Ray, no training: ``study.core.stats.simulate_racing`` races synthetic groups with the rules
``study.core.stats`` states (paired t against the best cell, non-inferiority margin -tolerance,
Bonferroni over the looks, one more seed per open cell up to ``max_seeds`` confirmation seeds).

A *depth curve* group is the reference cell "ref" (true test accuracy 0.8, the dearest) and five
cheaper cells c0..c4 (cheaper in that order) whose true differences to ref are
0, -0.5, -1, -2 and -3 tolerances. Each run's accuracy is true mean + a per-seed effect shared by
all cells (sd ``sd``) + independent noise (sd ``sd``). Every cell starts with the tuning run and
``seeds`` confirmation seeds; racing adds seeds until the group is decided or the open cells
reach the ceiling. Printed per noise level ``sd``:

* per cell: how often it ended as the best (highest mean), equivalent, undecided or worse, and
  its mean runs; "fixed" columns: the same groups without racing (every cell at the ceiling,
  one look at the full alpha) for comparison;
* per group: decided (no undecided cell could change the answer), seeds/ceiling (confirmation
  runs used over all cells / cells x max_seeds), false answer (the answer's true difference is
  -tolerance or worse).

*Pairs* (ref + one cheaper cell per true difference) show each difference on its own, and
what picking the best by its observed mean costs: a cheaper cell truly -tolerance worse that
ends with the higher mean is the best, hence the answer, without a test. ``check_best``
(``study.core.stats.group_answer``) keeps such a group open until the best is shown no worse
than each dearer cell; its columns show what that buys and costs.

Headline (last three lines, over the depth-curve groups of every sd):
  false_equivalence_rate: how often the cell whose true difference is exactly -tolerance (the
    worst case for the test) was accepted: called equivalent, or picked as the best;
  decided_fraction: groups decided when racing stopped;
  seeds_vs_ceiling: confirmation seeds used / confirmation seeds if every cell got the ceiling.

``--study DIR`` replays a finished study instead: the per-seed test accuracies it measured
(``trials.jsonl``: each cell's best configuration, its tuning run and confirmation runs), look
by look, as the racing rule saw (or would have seen) them, with the study's own tolerance, alpha,
``confirm.seeds`` and ``confirm.max_seeds`` (``--max-seeds`` overrides the ceiling, e.g. to ask
what racing would have done on a study run without it). Per answer group it prints each look's
verdicts and open cells; last, ``decided_fraction=`` and ``seeds_vs_ceiling=`` (the false
equivalence rate needs the true differences, which a real study does not know).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.core.stats import simulate_racing  # noqa: E402

DIFFS_IN_TOL = (0.0, -0.5, -1.0, -2.0, -3.0)
OUTCOMES = ("best", "equivalent", "undecided", "worse")


def _run(diffs, sd, seeds, max_seeds, tol, alpha, groups, rng, check_best=False):
    """Race ``groups`` groups; returns the per-cell outcome counts and the group totals."""
    counts, runs = Counter(), Counter()
    tot = dict(groups=0, decided=0, used=0, ceiling=0, false_answer=0, false_decided=0)
    for _ in range(groups):
        r = simulate_racing(diffs, sd, seeds, max_seeds, tol, alpha, rng, check_best=check_best)
        for cid, v in r["verdicts"].items():
            counts[cid, v] += 1
            runs[cid] += r["runs"][cid]
        tot["groups"] += 1
        tot["decided"] += bool(r["decided"])
        tot["used"] += r["seeds_used"]
        tot["ceiling"] += r["seeds_ceiling"]
        bad = r["true_diffs"][r["answer"]] <= -tol * (1 - 1e-9)
        tot["false_answer"] += bad
        tot["false_decided"] += bad and bool(r["decided"])
    return counts, runs, tot


def replay(study_dir: str, max_seeds: int | None = None) -> int:
    """Replay a study's measured per-seed results through the racing rule (see the docstring)."""
    import yaml

    from study.core import stats
    from study.core.design import StudyDesign
    from study.core.layout import STUDY_FILE, read_text
    from study.core.record import fold, seed_runs
    from study.core.spec import load_spec_dict
    from study.recorder import read_record

    spec = load_spec_dict(yaml.safe_load(read_text(f"{study_dir}/{STUDY_FILE}")))
    design = StudyDesign(spec)
    runs = seed_runs(fold(read_record(study_dir), spec.target_epochs))
    k = spec.confirm.seeds
    ceiling = max(k, spec.confirm.ceiling if max_seeds is None else max_seeds)
    tol = spec.report.tolerance / 100
    alpha = stats.alpha_per_look(spec.report.alpha, stats.looks(k, ceiling))
    print(f"replay {study_dir}: tolerance {spec.report.tolerance} points, alpha "
          f"{spec.report.alpha} ({alpha:.4f} per look), confirm.seeds {k}, ceiling {ceiling}")
    groups = decided = used = cells_total = 0
    for group, cells in design.answer_groups.items():
        cells = [c for c in cells if c in runs]
        if not cells:
            continue
        seeds = {c: sorted(runs[c])[: k + 1] for c in cells}
        look = 0
        while True:
            look += 1
            rows = [{"cell": c, "depth": design.cell(c).depth, "flops": -design.cell(c).depth,
                     "accs": {s: runs[c][s] for s in seeds[c]}} for c in cells]
            ans = stats.group_answer(rows, tol, alpha)
            verdicts = " ".join(f"d{design.cell(c).depth}:{ans['comparisons'][c]['verdict'][:5]}"
                                f"({len(seeds[c])})" for c in cells)
            print(f"  {group} look {look}: best d{design.cell(ans['best']).depth}, answer "
                  f"d{design.cell(ans['answer']).depth}, {verdicts}"
                  f"{'' if ans['decided'] else ', open: ' + ', '.join(ans['open'])}")
            want = stats.next_seeds(rows, tol, alpha, ceiling)
            more = False
            for c in want:  # the next measured seed of each cell the rule asks for
                nxt = [s for s in sorted(runs[c]) if s not in seeds[c]]
                if nxt:
                    seeds[c].append(nxt[0])
                    more = True
            if not want or not more:
                if want:
                    print(f"  {group}: the rule asks for more seeds than the study measured")
                break
        groups += 1
        decided += bool(ans["decided"])
        used += sum(len(s) - 1 for s in seeds.values())
        cells_total += len(cells)
    print()
    print(f"decided_fraction={decided / max(groups, 1):.4f}")
    print(f"seeds_vs_ceiling={used / max(cells_total * ceiling, 1):.4f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=2000, help="groups per configuration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.02, help="accuracy fraction")
    ap.add_argument("--sds", type=float, nargs="+", default=[0.01, 0.015, 0.02],
                    help="run-to-run noise sd of one cell (accuracy fraction)")
    ap.add_argument("--seeds", type=int, default=2, help="confirmation seeds before racing")
    ap.add_argument("--max-seeds", type=int, default=6, help="ceiling of confirmation seeds")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--study", help="replay this finished study's measured results instead")
    a = ap.parse_args(argv)
    if a.study:
        return replay(a.study, a.max_seeds if "--max-seeds" in (argv or sys.argv) else None)
    tol, g = a.tolerance, a.groups
    diffs = [k * tol for k in DIFFS_IN_TOL]
    ids = ["ref"] + [f"c{i}" for i in range(len(diffs))]
    true = dict(zip(ids, (0.0,) + DIFFS_IN_TOL))
    margin = ids[1 + DIFFS_IN_TOL.index(-1.0)]
    rng = np.random.default_rng(a.seed)
    out = dict(args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
               curve={}, pairs={})
    head = dict(margin=0, accepted=0, groups=0, decided=0, used=0, ceiling=0)

    print(f"racing: tolerance {tol}, alpha {a.alpha}, {a.seeds} confirmation seeds then up to "
          f"{a.max_seeds} ({a.max_seeds - a.seeds + 1} looks, alpha/look "
          f"{a.alpha / (a.max_seeds - a.seeds + 1):.4f}), {g} groups per row")
    print("\ndepth curve: ref + c0..c4, true diff in tolerances; shares of groups "
          "(racing | fixed = every cell at the ceiling, one look)")
    for sd in a.sds:
        c, runs, t = _run(diffs, sd, a.seeds, a.max_seeds, tol, a.alpha, g, rng)
        cf, _, tf = _run(diffs, sd, a.max_seeds, a.max_seeds, tol, a.alpha, g, rng)
        _, _, tc = _run(diffs, sd, a.seeds, a.max_seeds, tol, a.alpha, g, rng, check_best=True)
        print(f"\nsd {sd}: decided {t['decided'] / g:.3f} (fixed {tf['decided'] / g:.3f}), "
              f"seeds/ceiling {t['used'] / t['ceiling']:.3f}, false answer "
              f"{t['false_answer'] / g:.4f} (fixed {tf['false_answer'] / g:.4f}); "
              f"check_best: decided {tc['decided'] / g:.3f}, seeds/ceiling "
              f"{tc['used'] / tc['ceiling']:.3f}, false answer {tc['false_answer'] / g:.4f}")
        print(f"  {'cell':5} {'diff/tol':>8} " + " ".join(f"{o:>10}" for o in OUTCOMES)
              + f" {'runs':>5} | " + " ".join(f"{o:>10}" for o in OUTCOMES))
        rows = {}
        for cid in ids:
            rr = {o: c[cid, o] / g for o in OUTCOMES}
            rf = {o: cf[cid, o] / g for o in OUTCOMES}
            rows[cid] = dict(diff_tol=true[cid], racing=rr, fixed=rf, runs=runs[cid] / g)
            print(f"  {cid:5} {true[cid]:8.1f} " + " ".join(f"{rr[o]:10.4f}" for o in OUTCOMES)
                  + f" {runs[cid] / g:5.2f} | " + " ".join(f"{rf[o]:10.4f}" for o in OUTCOMES))
        out["curve"][str(sd)] = dict(cells=rows, decided=t["decided"] / g,
                                     seeds_vs_ceiling=t["used"] / t["ceiling"],
                                     false_answer=t["false_answer"] / g,
                                     fixed_decided=tf["decided"] / g,
                                     fixed_false_answer=tf["false_answer"] / g,
                                     check_best=dict(decided=tc["decided"] / g,
                                                     seeds_vs_ceiling=tc["used"] / tc["ceiling"],
                                                     false_answer=tc["false_answer"] / g))
        head["margin"] += g
        head["accepted"] += c[margin, "equivalent"] + c[margin, "best"]
        head["groups"] += g
        head["decided"] += t["decided"]
        head["used"] += t["used"]
        head["ceiling"] += t["ceiling"]

    print("\npairs: ref + one cheaper cell; shares of groups for the cheaper cell; false = the "
          "answer is the cheaper cell while it is -tolerance or worse (all | decided ones); "
          "right of '|': with check_best")
    cols = ("decided", "seeds/ceil", "false", "false&dec")
    print(f"  {'sd':>6} {'diff/tol':>8} " + " ".join(f"{o:>10}" for o in OUTCOMES)
          + " " + " ".join(f"{x:>10}" for x in cols) + " | "
          + " ".join(f"{x:>10}" for x in cols))
    for sd in a.sds:
        for k in DIFFS_IN_TOL:
            c, _, t = _run([k * tol], sd, a.seeds, a.max_seeds, tol, a.alpha, g, rng)
            _, _, tc = _run([k * tol], sd, a.seeds, a.max_seeds, tol, a.alpha, g, rng,
                            check_best=True)
            rr = {o: c["c0", o] / g for o in OUTCOMES}

            def summary(x):
                return dict(decided=x["decided"] / g, seeds_vs_ceiling=x["used"] / x["ceiling"],
                            false_answer=x["false_answer"] / g,
                            false_and_decided=x["false_decided"] / g)
            sp, sc = summary(t), summary(tc)
            out["pairs"][f"{sd}/{k}"] = dict(sd=sd, diff_tol=k, **rr, **sp, check_best=sc)
            print(f"  {sd:6.3f} {k:8.1f} " + " ".join(f"{rr[o]:10.4f}" for o in OUTCOMES)
                  + " " + " ".join(f"{v:10.4f}" for v in sp.values()) + " | "
                  + " ".join(f"{v:10.4f}" for v in sc.values()))

    fer = head["accepted"] / head["margin"]
    dec = head["decided"] / head["groups"]
    svc = head["used"] / head["ceiling"]
    out["headline"] = dict(false_equivalence_rate=fer, decided_fraction=dec,
                           seeds_vs_ceiling=svc)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    print()
    print(f"false_equivalence_rate={fer:.4f}")
    print(f"decided_fraction={dec:.4f}")
    print(f"seeds_vs_ceiling={svc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
