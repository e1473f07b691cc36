"""Early stopping per cell vs across cells, replayed offline on finished FIFO studies.

    python benchmarks/cell_scheduling.py STUDY_DIR [STUDY_DIR ...] [--orders 1000] [--seed 0] \\
        [--concurrency 2] [--grace-period 1] [--reduction-factor 3] \\
        [--order-kind permutation|interleaved] [--per-cell] [--json OUT]
    python benchmarks/cell_scheduling.py --demo [--per-cell]      # synthetic curves, no study

A FIFO study (``scheduler: {type: fifo}``) ran every tuning trial of every cell to
``target_epochs``, so its per-epoch ``val_acc`` curves say what any early-stopping rule would have
seen. This script reads such studies (local directories: ``<study>/<trial>/result.json``, JSON
lines, one per epoch, with ``epoch``, ``val_acc``, cumulative ``target_flops``, ``test_acc`` on the
last row and the trial's ``config``; ``study.yaml`` beside them for ``target_epochs``). Only
tuning trials (``config.phase == "tune"``) are used; a trial without a report for every epoch
1..target_epochs is skipped (named on stderr). No Ray, no training: ``simulate`` below replays
the rules of ``study.policy``, the same functions ``study.scheduler`` applies inside Tune.

Rules replayed, each split on its own (trials of different splits are never compared):

* ``cell-asha``    ASHA with one group per cell (``scheduler: asha``);
* ``cell-halving`` successive halving per cell (``scheduler: halving``, the default);
* ``global-asha``  ASHA with one group per split: every cell of the split compared with every
  other, what plain Tune ASHA did before cells existed;
* ``fifo``         no early stopping (the reference; spends 1.0 by construction).

Each rule runs over ``--orders`` random arrival orders (seeded; ``permutation``: a random
permutation of the split's tuning trials; ``interleaved``: each cell's trials shuffled and the
cells in a random order, then round-robin across cells as the study schedules them) and once in
the **round-robin** order the study itself uses (``study.core.design.StudyDesign``'s
``tuning_configs``: each cell's first trial, then each cell's second, ...; cells in the order of
their first trial, trials of a cell in Tune's trial order, i.e. the order of the trial ids' index
suffix or of the folder names).
Trials start as ``--concurrency`` slots free up, one epoch per time unit, with rungs at
``grace * rf**k`` below ``max_t = target_epochs``.

Reported per rule (means over (order, cell) pairs unless said otherwise):

* **compute/FIFO**: per cell, the sum over its trials of the cumulative ``target_flops`` at the
  epoch the trial was stopped at, divided by the cell's FIFO total (all its trials at
  ``target_epochs``); mean and 5-95 % range over orders, and the same for the whole study
  (overall fraction = all cells' spent / all cells' FIFO total, per order).
* **agreement**: how often the cell's best configuration under the rule (highest final
  ``val_acc`` among the cell's trials that reached ``target_epochs``) is FIFO's best (highest
  final ``val_acc`` among all the cell's trials). Both pick with the same function; ties go to
  the trial first in the study's order. A cell with no completed trial counts as a miss.
* **regret**: FIFO's best trial's ``test_acc`` minus the chosen trial's, in points (x100), over
  the (order, cell) pairs that have a chosen trial.
* **coverage**: share of (order, cell) pairs where the cell has >= 1 trial that reached
  ``target_epochs`` (global ASHA can starve a cell whose accuracies are below another cell's).

The last line printed is ``halving_agreement=<value>``: the agreement of ``cell-halving`` over
all cells and random orders (of all studies given). ``--demo`` replaces the study directories by
synthetic curves (6 cells x 4 learning rates in 2 splits, seeded, rising with noise, crossing).

Model limits (``simulate``'s): every epoch takes one time unit in every cell, and a trial ruled
out by *another* trial's result stops at once, where Tune stops it at its own next report (up to
one epoch later), so halving's compute is slightly optimistic.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from study import policy  # noqa: E402
from study.core import metrics as M  # noqa: E402
from study.core.design import cell_id  # noqa: E402

# name -> (policy rule, grouping)
RULES = {"cell-asha": ("asha", "cell"), "cell-halving": ("halving", "cell"),
         "global-asha": ("asha", "split"), "fifo": ("fifo", "cell")}
RESULT_FILE = "result.json"
STUDY_FILE = "study.yaml"


# --------------------------------------------------------------------------------------- data

@dataclass
class Trial:
    id: str
    cell: str
    split: str
    lr: float
    key: tuple  # the study's trial order (Tune's trial index, else the folder name)
    val: np.ndarray  # val_acc per epoch 1..T
    flops: np.ndarray  # cumulative target FLOPs per epoch 1..T
    test_acc: float  # at epoch T (nan if not reported)


@dataclass
class Study:
    name: str
    target_epochs: int
    trials: list[Trial]
    info: dict = field(default_factory=dict)  # the spec's scheduler / search sections


def _fail(msg: str):
    """Bad input: the message on stderr, exit status 2 (as ``study``'s commands)."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _order_key(trial_id: str, folder: str) -> tuple:
    m = re.search(r"_(\d+)$", trial_id or "")
    return (0, int(m.group(1)), folder) if m else (1, 0, folder)


def _read_rows(path: Path) -> list[dict]:
    text = path.read_text()
    rows, lines = [], text.split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            if i == len(lines) and not text.endswith("\n"):
                break  # a last line still being written
            _fail(f"{path}: line {i}: not JSON ({e})")
    return rows


def _cell_id(cfg: dict) -> str:
    if cfg.get(M.CELL):
        return str(cfg[M.CELL])
    return cell_id(cfg.get(M.SPLIT), cfg.get(M.BACKBONE), cfg.get(M.INIT),
                   cfg.get(M.FROZEN_DEPTH) or 0)


def load_study(path) -> Study:
    """The tuning trials of one finished FIFO study directory (local path)."""
    root = Path(path)
    spec_file = root / STUDY_FILE
    if not spec_file.is_file():
        _fail(f"{root}: not a study directory (no {STUDY_FILE})")
    spec = yaml.safe_load(spec_file.read_text()) or {}
    T = spec.get("target_epochs")
    if not isinstance(T, int) or T < 1:
        _fail(f"{spec_file}: target_epochs must be a positive integer, got {T!r}")
    sched = spec.get("scheduler") or {}
    if isinstance(sched, dict) and sched.get("type") not in (None, "fifo"):
        print(f"warning: {root}: scheduler.type is {sched.get('type')!r}, not fifo: stopped "
              "trials have no full curve and are skipped", file=sys.stderr)
    trials, skipped = [], []
    for tdir in sorted(p for p in root.iterdir() if p.is_dir()):
        res = tdir / RESULT_FILE
        if not res.is_file():
            continue
        rows = [r for r in _read_rows(res) if isinstance(r, dict)]
        if not rows:
            continue
        cfg = next((r["config"] for r in reversed(rows) if isinstance(r.get("config"), dict)), {})
        if cfg.get(M.PHASE, M.PHASE_TUNE) != M.PHASE_TUNE:
            continue
        by_epoch = {}
        for r in rows:  # a resumed trial may repeat epochs: the last report wins
            if r.get(M.EPOCH) is not None:
                by_epoch[int(r[M.EPOCH])] = r
        if any(e not in by_epoch for e in range(1, T + 1)):
            skipped.append(f"{tdir.name} ({max(by_epoch, default=0)}/{T} epochs)")
            continue
        last = by_epoch[T]
        tid = str(last.get("trial_id") or tdir.name.split("_", 1)[0])
        test = last.get(M.TEST_ACC)
        trials.append(Trial(
            id=tid, cell=_cell_id(cfg), split=str(cfg.get(M.SPLIT)),
            lr=float(cfg.get(M.LR, math.nan)), key=_order_key(tid, tdir.name),
            val=np.array([float(by_epoch[e][M.VAL_ACC]) for e in range(1, T + 1)]),
            flops=np.array([float(by_epoch[e].get(M.TARGET_FLOPS) or 0.0)
                            for e in range(1, T + 1)]),
            test_acc=float(test) if test is not None else math.nan))
    if skipped:
        print(f"warning: {root}: skipped {len(skipped)} tuning trial(s) without every epoch: "
              + ", ".join(skipped), file=sys.stderr)
    if not trials:
        _fail(f"{root}: no tuning trial with all {T} epochs")
    info = {k: spec.get(k) for k in ("scheduler", "search") if spec.get(k) is not None}
    return Study(name=str(spec.get("name") or root.name), target_epochs=T, trials=trials,
                 info=info)


def demo_study(seed: int = 0, epochs: int = 9) -> Study:
    """6 cells x 4 learning rates in 2 splits: each cell its own accuracy ceiling and best lr;
    high learning rates learn fast and plateau lower, low ones start slow and end higher (the
    curves cross); epoch noise 1.5 points, test = final val + 1 point noise."""
    rng = np.random.default_rng(seed)
    # (split, backbone, init, depth, accuracy ceiling, TFLOP per epoch)
    cells = [("5to5", "scratch_cnn", "source", 0, 0.62, 1.0),
             ("5to5", "scratch_cnn", "scratch", 0, 0.55, 1.0),
             ("5to5", "resnet18", "source", 3, 0.80, 0.4),
             ("2to8", "scratch_cnn", "source", 2, 0.48, 0.5),
             ("2to8", "resnet18", "source", 0, 0.70, 3.0),
             ("2to8", "resnet18", "scratch", 0, 0.58, 3.0)]
    trials, n = [], 0
    for split, bb, init, d, ceil, cost in cells:
        cell = cell_id(split, bb, init, d)
        opt = math.exp(rng.uniform(math.log(0.01), math.log(0.08)))
        u = (np.arange(4) + rng.random(4)) / 4
        rng.shuffle(u)
        for x in u:
            lr = math.exp(math.log(0.005) + x * (math.log(0.2) - math.log(0.005)))
            dist = math.log(lr / opt)
            asym = ceil * max(0.3, 1 - 0.06 * dist * dist) - 0.04 * max(0.0, dist)
            speed = 0.35 * (lr / 0.02) ** 0.6
            e = np.arange(1, epochs + 1)
            val = 0.1 + (asym - 0.1) * (1 - np.exp(-speed * e)) + rng.normal(0, 0.015, epochs)
            per_epoch = cost * 1e12 * rng.uniform(0.95, 1.05)
            trials.append(Trial(id=f"demo_{n:05d}", cell=cell, split=split, lr=lr,
                                key=(0, n, ""), val=np.clip(val, 0, 1),
                                flops=per_epoch * e, test_acc=float(np.clip(
                                    val[-1] + rng.normal(0, 0.01), 0, 1))))
            n += 1
    # the study's own order: trial ids follow tuning_configs (round-robin across cells)
    by_cell: dict = {}
    for t in trials:
        by_cell.setdefault(t.cell, []).append(t)
    rr = [p[i] for i in range(4) for p in by_cell.values()]
    for k, t in enumerate(rr):
        t.id, t.key = f"demo_{k:05d}", (0, k, "")
    return Study(name=f"demo (seed {seed})", target_epochs=epochs, trials=rr)


# ------------------------------------------------------------------------------------- replay

def simulate(curves: dict, order: list, *, rule: str, grace: int, rf: float, max_t: int,
             concurrency: int, groups: dict | None = None) -> dict:
    """Replay a rule of ``study.policy`` (the functions ``study.scheduler`` applies inside Tune)
    on known learning curves: trials start in ``order`` as slots free up, each epoch takes one
    time unit, results arrive epoch by epoch. ``curves``: trial -> scores per epoch (len max_t);
    ``groups``: trial -> group (None: one group); rule 'halving', 'asha' or 'fifo'. Returns
    {trial: epochs run}. (Used by tests/test_policy.py too.)"""
    groups = groups or {t: 0 for t in curves}
    ms = policy.milestones(grace, rf, max_t)
    sizes: dict = {}
    for t in order:
        sizes[groups[t]] = sizes.get(groups[t], 0) + 1
    keep = {g: policy.keep_counts(n, rf, len(ms)) for g, n in sizes.items()}
    rungs: dict = {g: {} for g in sizes}
    epochs = {t: 0 for t in order}
    stopped: set = set()
    queue, running = list(order), []
    while queue or running:
        while queue and len(running) < concurrency:
            running.append(queue.pop(0))
        for t in list(running):  # one epoch each, in start order
            if t in stopped:
                continue
            epochs[t] += 1
            e, g = epochs[t], groups[t]
            score = curves[t][e - 1]
            if rule == "asha":
                for m in ms:
                    if e == m:
                        before = dict(rungs[g].get(m, {}))
                        rungs[g].setdefault(m, {})[t] = score
                        if policy.asha_stops(before, score, rf):
                            stopped.add(t)
            elif rule == "halving":
                policy.record(rungs[g], t, e, score, ms)
            if rule == "halving":  # results can rule out any running trial of the group
                for u in running:
                    if groups[u] == g and policy.halving_stops(rungs[g], u, keep[g], ms, sizes[g]):
                        stopped.add(u)
            if e >= max_t:
                stopped.add(t)
        running = [t for t in running if t not in stopped]
    return epochs


def round_robin(trials: list[Trial]) -> list[int]:
    """Indices (into ``trials``) in the study's order: each cell's first trial, then each cell's
    second, ...; cells by their first trial, trials of a cell by the study's trial order."""
    idx = sorted(range(len(trials)), key=lambda i: trials[i].key)
    per_cell: dict = {}
    for i in idx:
        per_cell.setdefault(trials[i].cell, []).append(i)
    lists = list(per_cell.values())
    return [p[k] for k in range(max(map(len, lists))) for p in lists if k < len(p)]


def _random_order(trials, idx: list[int], kind: str, rng) -> list[int]:
    if kind == "permutation":
        return [idx[j] for j in rng.permutation(len(idx))]
    per_cell: dict = {}
    for i in idx:
        per_cell.setdefault(trials[i].cell, []).append(i)
    lists = [[p[j] for j in rng.permutation(len(p))] for p in per_cell.values()]
    lists = [lists[j] for j in rng.permutation(len(lists))]
    return [p[k] for k in range(max(map(len, lists))) for p in lists if k < len(p)]


@dataclass
class Replay:
    """Per rule and order set ('random', 'round-robin'): arrays (orders, cells)."""
    cells: list[str]
    n_trials: np.ndarray  # per cell
    fifo_total: np.ndarray  # per cell, FLOPs
    fifo_best: list[int]  # per cell, trial index
    spent: dict  # (rule, kind) -> (R, C) FLOPs
    chosen: dict  # (rule, kind) -> (R, C) trial index of the pick, -1: none completed
    regret: dict  # (rule, kind) -> (R, C) test points, nan where none
    trials: list[Trial]


def replay(study: Study, *, orders: int, seed: int, grace: int, rf: float, concurrency: int,
           order_kind: str = "permutation", rules=tuple(RULES)) -> Replay:
    trials, T = study.trials, study.target_epochs
    first = {}
    for t in sorted(trials, key=lambda t: t.key):
        first.setdefault(t.cell, len(first))
    cells = sorted(first, key=first.get)
    ci = {c: k for k, c in enumerate(cells)}
    cell_of = np.array([ci[t.cell] for t in trials])
    flops = np.stack([t.flops for t in trials])  # (N, T) cumulative
    final_val = np.array([t.val[-1] for t in trials])
    test = np.array([t.test_acc for t in trials])
    curves = {i: t.val.tolist() for i, t in enumerate(trials)}
    # rank inside the cell: FIFO's choice rule (highest final val_acc, ties: study order)
    members = [sorted(np.flatnonzero(cell_of == k), key=lambda i: (-final_val[i], trials[i].key))
               for k in range(len(cells))]
    fifo_best = [m[0] for m in members]
    splits = sorted({t.split for t in trials})
    rr = round_robin(trials)
    rng = np.random.default_rng(seed)
    C = len(cells)
    shape = {"random": orders, "round-robin": 1}
    spent = {(r, k): np.zeros((n, C)) for r in rules for k, n in shape.items()}
    chosen = {(r, k): np.full((n, C), -1) for r in rules for k, n in shape.items()}
    for split in splits:
        idx = [i for i, t in enumerate(trials) if t.split == split]
        cell_groups = {i: trials[i].cell for i in idx}
        split_groups = {i: split for i in idx}
        order_sets = {"random": [_random_order(trials, idx, order_kind, rng)
                                 for _ in range(orders)],
                      "round-robin": [[i for i in rr if trials[i].split == split]]}
        split_cells = sorted({cell_of[i] for i in idx})
        for rule in rules:
            prule, grouping = RULES[rule]
            groups = cell_groups if grouping == "cell" else split_groups
            for kind, olist in order_sets.items():
                for r, order in enumerate(olist):
                    ep = simulate(curves, order, rule=prule, grace=grace, rf=rf, max_t=T,
                                  concurrency=concurrency, groups=groups)
                    for k in split_cells:
                        done = [i for i in members[k] if ep[i] >= T]
                        spent[rule, kind][r, k] = sum(flops[i, ep[i] - 1] for i in members[k])
                        chosen[rule, kind][r, k] = done[0] if done else -1  # members are ranked
    regret = {}
    for key, ch in chosen.items():
        best_test = test[fifo_best][None, :]
        regret[key] = np.where(ch >= 0, (best_test - test[np.maximum(ch, 0)]) * 100, np.nan)
    return Replay(cells=cells, n_trials=np.array([len(m) for m in members]),
                  fifo_total=np.bincount(cell_of, weights=flops[:, -1], minlength=C),
                  fifo_best=fifo_best, spent=spent, chosen=chosen, regret=regret, trials=trials)


def combine(reps: list[Replay], names: list[str]) -> Replay:
    """Several studies' replays side by side (cells prefixed by the study when > 1)."""
    if len(reps) == 1:
        return reps[0]
    off, trials, fifo_best, chosen = 0, [], [], {}
    for rp in reps:
        fifo_best += [b + off for b in rp.fifo_best]
        trials += rp.trials
        for key, ch in rp.chosen.items():
            chosen.setdefault(key, []).append(np.where(ch >= 0, ch + off, -1))
        off += len(rp.trials)
    cat = lambda d: {k: np.concatenate([rp_d[k] for rp_d in d], axis=1) for k in d[0]}  # noqa: E731
    return Replay(cells=[f"{n}:{c}" for n, rp in zip(names, reps) for c in rp.cells],
                  n_trials=np.concatenate([rp.n_trials for rp in reps]),
                  fifo_total=np.concatenate([rp.fifo_total for rp in reps]),
                  fifo_best=fifo_best, spent=cat([rp.spent for rp in reps]),
                  chosen={k: np.concatenate(v, axis=1) for k, v in chosen.items()},
                  regret=cat([rp.regret for rp in reps]), trials=trials)


# -------------------------------------------------------------------------------- summarising

def _stats(x) -> dict:
    x = np.asarray(x, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if not len(x):
        return {"mean": math.nan, "p5": math.nan, "p95": math.nan, "max": math.nan}
    p5, p95 = np.percentile(x, [5, 95])
    return {"mean": float(x.mean()), "p5": float(p5), "p95": float(p95), "max": float(x.max())}


def summarise(rp: Replay, rules=tuple(RULES)) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_cell = {k: v / rp.fifo_total[None, :] for k, v in rp.spent.items()}
    out: dict = {"rules": {}, "cells": {}}
    for rule in rules:
        out["rules"][rule], out["cells"][rule] = {}, {}
        for kind in ("random", "round-robin"):
            key = (rule, kind)
            agree = rp.chosen[key] == np.array(rp.fifo_best)[None, :]
            covered = rp.chosen[key] >= 0
            overall = rp.spent[key].sum(axis=1) / rp.fifo_total.sum()
            out["rules"][rule][kind] = {
                "orders": int(agree.shape[0]),
                "compute": _stats(overall), "cell_compute": _stats(frac_cell[key]),
                "agreement": float(agree.mean()), "regret": _stats(rp.regret[key]),
                "coverage": float(covered.mean())}
            for c, cell in enumerate(rp.cells):
                out["cells"][rule].setdefault(cell, {})[kind] = {
                    "compute": _stats(frac_cell[key][:, c]), "agreement": float(agree[:, c].mean()),
                    "regret": _stats(rp.regret[key][:, c]), "coverage": float(covered[:, c].mean())}
    out["halving_agreement"] = out["rules"].get("cell-halving", {}).get(
        "random", {}).get("agreement", math.nan)
    return out


def _rng_txt(s: dict, nd=3) -> str:
    if math.isnan(s["mean"]):
        return "-"
    if s["p5"] == s["p95"]:
        return f"{s['mean']:.{nd}f}"
    return f"{s['mean']:.{nd}f} [{s['p5']:.{nd}f}, {s['p95']:.{nd}f}]"


def _table(rows: list[list[str]], header: list[str]) -> str:
    w = [max(len(r[j]) for r in rows + [header]) for j in range(len(header))]
    line = lambda r: "  ".join(x.ljust(w[j]) if j == 0 else x.rjust(w[j])  # noqa: E731
                               for j, x in enumerate(r)).rstrip()
    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


def print_report(title: str, rp: Replay, summ: dict, per_cell: bool, rules=tuple(RULES)) -> None:
    print(title)
    rows = []
    for rule in rules:
        for kind in ("random", "round-robin"):
            s = summ["rules"][rule][kind]
            rows.append([rule, f"{kind} x{s['orders']}" if kind == "random" else kind,
                         _rng_txt(s["compute"]), _rng_txt(s["cell_compute"]),
                         f"{100 * s['agreement']:.1f}%",
                         "-" if math.isnan(s["regret"]["mean"]) else
                         f"{s['regret']['mean']:.2f} / {s['regret']['p95']:.2f} / "
                         f"{s['regret']['max']:.2f}",
                         f"{100 * s['coverage']:.1f}%"])
    print(_table(rows, ["rule", "orders", "compute/FIFO overall [5-95%]",
                        "compute/FIFO per cell [5-95%]", "agree", "regret pts mean/p95/max",
                        "coverage"]))
    if not per_cell:
        return
    print("\ncells (FIFO):")
    rows = []
    for c, cell in enumerate(rp.cells):
        b = rp.trials[rp.fifo_best[c]]
        rows.append([cell, str(rp.n_trials[c]), f"{rp.fifo_total[c] / 1e12:.3f}",
                     f"{b.lr:.4g}", f"{b.val[-1]:.4f}", f"{b.test_acc:.4f}"])
    print(_table(rows, ["cell", "trials", "TFLOP", "best lr", "val", "test"]))
    for rule in rules:
        print(f"\n{rule}, per cell (random orders; rr = the round-robin order):")
        rows = []
        for cell in rp.cells:
            s, r = summ["cells"][rule][cell]["random"], summ["cells"][rule][cell]["round-robin"]
            rr_pick = ("none" if r["coverage"] == 0 else "yes" if r["agreement"] == 1 else "no")
            rows.append([cell, _rng_txt(s["compute"]), _rng_txt(r["compute"]),
                         f"{100 * s['agreement']:.1f}%", rr_pick,
                         "-" if math.isnan(s["regret"]["mean"]) else f"{s['regret']['mean']:.2f}",
                         f"{100 * s['coverage']:.1f}%"])
        print(_table(rows, ["cell", "compute/FIFO [5-95%]", "rr", "agree", "rr best",
                            "regret pts", "coverage"]))


# ---------------------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="*", help="finished FIFO study directories")
    ap.add_argument("--demo", action="store_true", help="synthetic curves instead of studies")
    ap.add_argument("--orders", "-R", type=int, default=1000, help="random arrival orders")
    ap.add_argument("--seed", type=int, default=0, help="seed of the orders (and of --demo)")
    ap.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=float, default=3)
    ap.add_argument("--order-kind", choices=["permutation", "interleaved"], default="permutation",
                    help="random orders: a permutation of the split's trials, or shuffled cells "
                         "interleaved round-robin")
    ap.add_argument("--per-cell", action="store_true", help="also a table per cell and rule")
    ap.add_argument("--json", help="write the summary to this file")
    a = ap.parse_args(argv)
    if a.demo == bool(a.studies):
        ap.error("give study directories or --demo (not both)")
    if a.orders < 1 or a.concurrency < 1 or a.grace_period < 1 or a.reduction_factor <= 1:
        ap.error("--orders, --concurrency, --grace-period must be >= 1, --reduction-factor > 1")
    studies = [demo_study(a.seed)] if a.demo else [load_study(p) for p in a.studies]
    reps = []
    for st in studies:
        if a.grace_period > st.target_epochs:
            ap.error(f"{st.name}: --grace-period {a.grace_period} > target_epochs "
                     f"{st.target_epochs}")
        t0 = time.perf_counter()
        rp = replay(st, orders=a.orders, seed=a.seed, grace=a.grace_period,
                    rf=a.reduction_factor, concurrency=a.concurrency, order_kind=a.order_kind)
        dt = time.perf_counter() - t0
        reps.append(rp)
        splits = sorted({t.split for t in st.trials})
        ms = policy.milestones(a.grace_period, a.reduction_factor, st.target_epochs)
        own = ", ".join(f"{k}: {v}" for k, v in st.info.items())
        title = (f"study {st.name}: {len(st.trials)} tuning trials, {len(rp.cells)} cells, "
                 f"{len(splits)} split(s), target_epochs {st.target_epochs}, FIFO "
                 f"{rp.fifo_total.sum() / 1e12:.3f} TFLOP{f' ({own})' if own else ''}\n"
                 f"replay: grace {a.grace_period}, rf {a.reduction_factor:g}, rungs {ms}, "
                 f"concurrency {a.concurrency}, {a.orders} {a.order_kind} orders (seed {a.seed}) "
                 f"+ round-robin, {dt:.1f} s\n")
        print_report(title, rp, summarise(rp), a.per_cell)
        print()
    names = [st.name if [s.name for s in studies].count(st.name) == 1 else f"{st.name}#{k}"
             for k, st in enumerate(studies)]
    rp = combine(reps, names)
    summ = summarise(rp)
    if len(reps) > 1:
        print_report(f"all {len(reps)} studies ({len(rp.cells)} cells):\n", rp, summ, False)
        print()
    if a.json:
        clean = lambda x: ({k: clean(v) for k, v in x.items()} if isinstance(x, dict)  # noqa: E731
                           else None if isinstance(x, float) and math.isnan(x) else x)
        Path(a.json).write_text(json.dumps(clean({"args": vars(a), "studies": names, **summ}),
                                           indent=1, default=float))
    print(f"halving_agreement={summ['halving_agreement']:.4f}")
    return summ


if __name__ == "__main__":
    main()
