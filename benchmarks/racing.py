"""The Answer's guarantee, measured where it is hardest: synthetic groups, racing and fixed-n.

    python benchmarks/racing.py [--groups 4000] [--seed 0] [--seeds 2] [--alpha 0.05] [--json OUT]
    python benchmarks/racing.py --truth "0,-1,-1" --sd 1.5 --tolerance 1 --seeds 2 \\
        --max-seeds 6 --alpha 0.05 --groups 4000 [--fixed]
    python benchmarks/racing.py --study DIR [--max-seeds M]

No Ray, no training: ``study.core.stats.simulate_racing`` runs thousands of synthetic groups at
once through the product's own rule (``study.core.stats.mcb``, the function ``group_answer``
decides with: multiple comparisons with the best, Bonferroni over the K - 1 rivals and over
racing's looks). A run of depth j with seed s scores mu_j + u_s + e_{j,s}: u_s ~ N(0, sd) shared
by every depth run with seed s (the same source model, data and augmentation), e ~ N(0, sd) its
own. Every depth starts with ``--seeds`` confirmation runs (the tuning run never measures).

**The grid** (default): groups of 2, 3, 4 and 6 depths; true differences from the best in
tolerances, listed from the dearest depth to the cheapest:
  cheap@margin  0, ..., 0, -1    the cheapest depth exactly one tolerance below, the rest tied
                                 best (a tie at the top is the hardest case for the best);
  all@margin    0, -1, ..., -1   the best is the dearest, every cheaper depth at the margin;
  slope         0 ... -1         evenly from the dearest (best) to the cheapest (at the margin);
  tied          0, ..., 0        nothing wrong is possible: what deciding costs;
sd / tolerance 0.5, 1, 1.5, 2; designs fixed n = 4 and 6 (one look) and racing from ``--seeds``
to ceilings 4 and 6. A *wrong answer* is a decided answer whose true mean is tolerance or more
below the true best (at exactly -tolerance: the least favourable case, counted as wrong).

Printed last:
  wrong_answer_rate_max  the largest wrong-answer rate over the grid (its configuration on the
                         line before); it must be <= alpha up to Monte Carlo error (the line
                         before gives alpha + 3 standard errors at 4000 groups);
  decided_fraction       decided groups over the racing configurations of the grid;
  seeds_vs_fixed         runs per decided answer, racing / the fixed design at the same ceiling
                         (same guarantee: one look at alpha / (K - 1)), summed over the grid.

``--truth`` runs one configuration (true differences in accuracy points, dearest depth first;
``--sd`` and ``--tolerance`` in points) and prints ``wrong_answer_rate=``, ``decided_fraction=``
and ``runs_per_cell=`` last. ``--study DIR`` replays a finished study's measured confirmation
runs look by look through the racing rule, with its own tolerance, alpha and seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.core.stats import simulate_racing  # noqa: E402

SIZES = (2, 3, 4, 6)
SDS = (0.5, 1.0, 1.5, 2.0)  # run-to-run sd in tolerances
CEILINGS = (4, 6)


def truths(k: int) -> dict[str, tuple]:
    """The grid's true differences (in tolerances, dearest first) for a group of k depths."""
    out = {"cheap@margin": (0.0,) * (k - 1) + (-1.0,),
           "all@margin": (0.0,) + (-1.0,) * (k - 1),
           "slope": tuple(float(x) for x in np.linspace(0.0, -1.0, k)),
           "tied": (0.0,) * k}
    seen, uniq = set(), {}
    for name, t in out.items():
        if t not in seen:
            seen.add(t)
            uniq[name] = t
    return uniq


def one(truth, sd, tol, seeds, ceiling, alpha, groups, rng, race=True) -> dict:
    r = simulate_racing(np.asarray(truth) * tol, sd * tol, seeds, ceiling, tol, alpha, rng,
                        groups, race=race)
    g = len(r["answer"])
    return dict(wrong=float((r["wrong"] & r["decided"]).mean()),
                wrong_any=float(r["wrong"].mean()), decided=float(r["decided"].mean()),
                n_decided=int(r["decided"].sum()), runs=int(r["runs"].sum()),
                runs_per_cell=float(r["runs"].mean()), groups=g,
                shown_best_wrong=float(r["shown_best_wrong"].mean()))


def grid(a) -> int:
    rng = np.random.default_rng(a.seed)
    tol, g = 1.0, a.groups  # everything in tolerances
    rows = []
    print(f"grid: {g} groups per configuration, alpha {a.alpha}, racing from {a.seeds} "
          f"confirmation seeds; true differences and sd in tolerances; wrong = decided answer "
          f"tolerance or more below the best")
    print(f"{'K':>2} {'truth':>14} {'sd':>4} {'design':>8} {'wrong':>7} {'decided':>8} "
          f"{'runs/cell':>9}")
    for k in SIZES:
        for name, truth in truths(k).items():
            for sd in SDS:
                for ceiling in CEILINGS:
                    for race in (False, True):
                        r = one(truth, sd, tol, a.seeds if race else ceiling, ceiling, a.alpha,
                                g, rng, race)
                        design = f"{'race' if race else 'fixed'}{ceiling}"
                        rows.append(dict(k=k, truth=name, truth_values=truth, sd=sd,
                                         design=design, race=race, ceiling=ceiling, **r))
                        print(f"{k:2d} {name:>14} {sd:4.1f} {design:>8} {r['wrong']:7.4f} "
                              f"{r['decided']:8.4f} {r['runs_per_cell']:9.2f}")
    worst = max(rows, key=lambda r: r["wrong"])
    race = [r for r in rows if r["race"]]
    fixed = {(r["k"], r["truth"], r["sd"], r["ceiling"]): r for r in rows if not r["race"]}
    dec = sum(r["n_decided"] for r in race) / sum(r["groups"] for r in race)
    runs_race = sum(r["runs"] for r in race) / max(1, sum(r["n_decided"] for r in race))
    fx = [fixed[(r["k"], r["truth"], r["sd"], r["ceiling"])] for r in race]
    runs_fixed = sum(r["runs"] for r in fx) / max(1, sum(r["n_decided"] for r in fx))
    svf = runs_race / runs_fixed
    mc = 3 * math.sqrt(a.alpha * (1 - a.alpha) / g)
    if a.json:
        a.json.write_text(json.dumps(dict(rows=rows, worst=worst, decided_fraction=dec,
                                          seeds_vs_fixed=svf, alpha=a.alpha), indent=1))
    print()
    print(f"runs per decided answer: racing {runs_race:.1f}, fixed at the same ceiling "
          f"{runs_fixed:.1f}")
    print(f"worst configuration: K={worst['k']} {worst['truth']} {worst['truth_values']} "
          f"sd={worst['sd']} tolerances, {worst['design']}; alpha + 3 Monte Carlo standard "
          f"errors = {a.alpha + mc:.4f}")
    print(f"wrong_answer_rate_max={worst['wrong']:.4f}")
    print(f"decided_fraction={dec:.4f}")
    print(f"seeds_vs_fixed={svf:.4f}")
    return 0


def replay(study_dir: str, max_seeds: int | None = None) -> int:
    """Replay a study's measured confirmation runs through the racing rule, look by look."""
    import yaml

    from study.core import stats
    from study.core.design import design_of
    from study.core.layout import STUDY_FILE, read_text
    from study.core.record import fold, seed_runs
    from study.core.spec import load_spec_dict
    from study.recorder import read_record

    spec = load_spec_dict(yaml.safe_load(read_text(f"{study_dir}/{STUDY_FILE}")))
    design = design_of(spec)
    runs = seed_runs(fold(read_record(study_dir), spec.target_epochs))
    k = spec.confirm.seeds
    ceiling = max(k, spec.confirm.ceiling if max_seeds is None else max_seeds)
    nlooks = stats.looks(k, ceiling)
    tol = spec.report.tolerance / 100
    print(f"replay {study_dir}: tolerance {spec.report.tolerance} points, alpha "
          f"{spec.report.alpha} over {nlooks} looks, confirm.seeds {k}, ceiling {ceiling}")
    groups = decided = used = cells_total = 0
    for group, cells in design.answer_groups.items():
        cells = [c for c in cells if c in runs]
        if not cells:
            continue
        seeds = {c: sorted(runs[c])[:k] for c in cells}
        look = 0
        while True:
            look += 1
            rows = [{"cell": c, "depth": design.cell(c).depth, "flops": -design.cell(c).depth,
                     "accs": {s: runs[c][s] for s in seeds[c]}} for c in cells]
            ans = stats.group_answer(rows, tol, spec.report.alpha, racing=(k, ceiling))
            verdicts = " ".join(f"d{design.cell(c).depth}:{ans['comparisons'][c]['verdict']}"
                                f"({len(seeds[c])})" for c in cells)
            print(f"  {group} look {look}: answer {ans['answer']}, {verdicts}"
                  f"{'' if ans['decided'] else ', open: ' + ', '.join(ans['open'])}")
            want = stats.next_seeds(rows, tol, spec.report.alpha, k, ceiling)
            level = max(len(s) for s in seeds.values()) + 1
            more = False
            for c in want:  # every measured seed up to the group's next level
                for s in sorted(runs[c]):
                    if len(seeds[c]) < level and s not in seeds[c]:
                        seeds[c].append(s)
                        more = True
            if not want or not more:
                if want:
                    print(f"  {group}: the rule asks for more seeds than the study measured")
                break
        groups += 1
        decided += bool(ans["decided"])
        used += sum(len(s) for s in seeds.values())
        cells_total += len(cells)
    print()
    print(f"decided_fraction={decided / max(groups, 1):.4f}")
    print(f"seeds_vs_ceiling={used / max(cells_total * ceiling, 1):.4f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", type=int, default=4000, help="groups per configuration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=2, help="confirmation seeds before racing")
    ap.add_argument("--max-seeds", type=int, default=6, help="ceiling (--truth, --study)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--truth", help="one configuration: true differences in points, "
                    "dearest depth first, e.g. '0,-1,-1'")
    ap.add_argument("--sd", type=float, default=1.5, help="run-to-run sd, points (--truth)")
    ap.add_argument("--tolerance", type=float, default=1.0, help="points (--truth)")
    ap.add_argument("--fixed", action="store_true", help="--truth: fixed n = --max-seeds")
    ap.add_argument("--json", type=Path, help="write the grid's numbers here")
    ap.add_argument("--study", help="replay this finished study's measured results instead")
    a = ap.parse_args(argv)
    if a.study:
        return replay(a.study, a.max_seeds if "--max-seeds" in (argv or sys.argv) else None)
    if a.truth is None:
        return grid(a)
    truth = [float(x) for x in a.truth.split(",")]
    r = one([t / a.tolerance for t in truth], a.sd / a.tolerance, 1.0,
            a.max_seeds if a.fixed else a.seeds, a.max_seeds, a.alpha, a.groups,
            np.random.default_rng(a.seed), race=not a.fixed)
    print(f"truth {truth} points, sd {a.sd}, tolerance {a.tolerance}, "
          f"{'fixed n=' + str(a.max_seeds) if a.fixed else f'racing {a.seeds}..{a.max_seeds}'}"
          f", alpha {a.alpha}, {a.groups} groups; any wrong answer (decided or not) "
          f"{r['wrong_any']:.4f}")
    print(f"wrong_answer_rate={r['wrong']:.4f}")
    print(f"decided_fraction={r['decided']:.4f}")
    print(f"runs_per_cell={r['runs_per_cell']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
