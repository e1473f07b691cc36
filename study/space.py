"""What a study samples, and in what order: the Tune searcher.

What it hands out comes from the study's design (``study.core.design.StudyDesign``). Mode
``compare`` (default): the tuning trials are known up front (each cell's learning rates,
interleaved across cells). Mode ``best``: one Optuna search per split over (backbone, init,
frozen depth, lr) (``DefineByRun``), so what a split's trials teach the sampler never steers
another split. In both modes, once every tuning trial of a group (cell / split) has ended, the
group's best configuration (highest final ``val_acc`` among its trials that reached
``target_epochs``) is queued again with the confirmation seeds.

**Racing** (mode compare, ``confirm.max_seeds`` > ``confirm.seeds``): once every cell of an
answer group (split x backbone x init) has its confirmation runs, the group's Answer is computed
on paired per-seed test accuracies (``study.core.stats.next_seeds``); the cells that can still
change it (every depth that could be the best, and the cheaper depths not shown worse) are
brought to the group's next seed, and so on until decided or at the ceiling. Each level is one
look; alpha is spent over the looks up to the ceiling, so the Answer's guarantee holds whenever
the racing stops. The tuning run that chose a cell's configuration never counts as a run.

The searcher is plain data plus (mode best) Optuna's samplers: Tune saves it with every
experiment checkpoint (``save`` / ``restore``), so a resumed study continues the same sequence.
"""
from __future__ import annotations

import pickle

from ray.tune.search import Searcher

from study.core import decide
from study.core import metrics as M
from study.core.design import StudyDesign, cell_id, design_of
from study.core.layout import write_atomic
from study.core.status import COMPLETED, trial_status
from study.core.record import config_key
from study.core.spec import Spec, load_spec_dict


class DefineByRun:
    """Optuna define-by-run space of one split (mode best; a picklable callable, so Tune can
    checkpoint the searcher). Frozen depth is conditional: ``frozen_depth__<backbone>`` per
    backbone; init ``scratch`` trains every stage (depth 0, not sampled)."""

    def __init__(self, spec_dict: dict, split: str):
        self.spec = load_spec_dict(spec_dict)  # validated once, not per sample
        self.design = design_of(self.spec)
        self.split = split

    def __call__(self, trial):
        spec, design = self.spec, self.design
        backbone = trial.suggest_categorical(
            M.BACKBONE, [b.name for b in spec.backbones if design.valid_inits(b.name)])
        inits = design.valid_inits(backbone)
        # One categorical per backbone: Optuna's distributions must not change between trials.
        init = trial.suggest_categorical(f"{M.INIT}__{backbone}", inits) if len(inits) > 1 else inits[0]
        ds = design.depths(backbone, init)  # scratch: depth 0, not sampled
        depth = trial.suggest_categorical(f"{M.FROZEN_DEPTH}__{backbone}", ds) if len(ds) > 1 else ds[0]
        trial.suggest_float(M.LR, spec.lr.low, spec.lr.high, log=True)
        return {M.SPLIT: self.split, M.INIT: init, M.FROZEN_DEPTH: depth,
                M.SEED: design.tune_seed, M.CELL: cell_id(self.split, backbone, init, depth),
                M.PHASE: M.PHASE_TUNE}


def _sampler(spec: Spec, seed: int):
    import optuna

    n = spec.search.num_samples
    if spec.search.algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n // 3)))
    if spec.search.algorithm == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    return optuna.samplers.RandomSampler(seed=seed)


_READY: dict[str, object] = {}  # study name -> the runner's ready(config) hook (driver-side)


def register_ready(study: str, ready) -> None:
    """The runner's ``ready(config)`` hook for the searcher of ``study``: a new searcher and one
    Tune restored from the experiment state (the hook is not saved) both find it here."""
    _READY[study] = ready


_RESUMED: dict[str, dict] = {}  # study name -> {trial_id: config} of the state Tune restores


def register_resumed(study: str, trials: dict | None) -> None:
    """The trials (id -> config) of the experiment state ``study resume`` hands to Tune, for the
    searcher Tune restores with it to reconcile against (``StudySearcher.reconcile``). None: not
    known (the searcher is restored as saved)."""
    if trials is None:
        _RESUMED.pop(study, None)
    else:
        _RESUMED[study] = trials


# Fields later versions added, with what a searcher saved before them behaves as: the one
# place that knows older saved states (resume restores whatever version saved the study).
_ADDED_LATER = {"awaiting": {}, "costs": None, "round_robin": True}


class StudySearcher(Searcher):
    """Hands out the study's tuning trials, then each group's confirmation trials (and, with
    racing, further confirmation seeds where the Answer is still open).

    ``ready(config) -> bool`` (the runner passes its source models' check; not saved) may hold
    back a trial whose source model is not trained yet; other trials go first."""

    def __init__(self, spec_dict: dict, ready=None, costs: dict | None = None):
        super().__init__(metric=M.OBJECTIVE, mode=M.MODE)
        spec = load_spec_dict(spec_dict)
        design = design_of(spec)
        self.spec_dict = spec_dict
        # cell -> expected cost of one complete trial (study.plan.schedule_costs; None: order by
        # the epochs measured so far). Without a time budget the longest cells go first.
        self.costs: dict | None = dict(costs) if costs else None
        self.round_robin = spec.time_budget_s is not None or not self.costs
        self.study_mode = design.mode
        self.target_epochs = design.target_epochs
        self.sizes = dict(design.group_sizes)
        self.queue: list[dict] = []  # tuning configs not handed out yet (compare, best+grid)
        self.remaining: dict[str, int] = {}  # mode best + optuna: samples left per split
        self.proposers: dict = {}  # mode best + optuna: split -> OptunaSearch
        if self.study_mode == "compare":
            self.queue = design.tuning_configs()
        elif spec.search.algorithm == "grid":
            pts = design.best_grid()
            self.queue = [dict(p) for r in range(spec.search.repeats) for p in pts]
            for i, p in enumerate(self.queue):
                p[M.REPEAT] = i // len(pts) if pts else 0
        else:
            from ray.tune.search.optuna import OptunaSearch

            for i, s in enumerate(spec.splits):
                self.proposers[s.name] = OptunaSearch(
                    space=DefineByRun(spec_dict, s.name), sampler=_sampler(spec, spec.search.seed + i),
                    metric=M.OBJECTIVE, mode=M.MODE)
                self.remaining[s.name] = spec.search.num_samples
        self.repeats = spec.search.repeats
        self.pending_repeats: list[dict] = []  # mode best: further seeds of a proposal
        self.proposal_of: dict[str, str] = {}  # trial -> proposal id (mode best, optuna)
        self.proposal_results: dict[str, list] = {}
        self.confirm_queue: list[dict] = []
        self.group_of: dict[str, str] = {}  # tuning trial -> group
        self.live: set[str] = set()
        self.configs: dict[str, dict] = {}  # trial -> the config handed out
        self.ended: dict[str, dict] = {}  # group -> {trial: (final val_acc or None, config)}
        self.confirmed: set[str] = set()
        # group -> its last tuning trial, when the group's confirmation was queued while that
        # trial still ran (every other one had ended without completing: it is the best)
        self.awaiting: dict[str, str] = {}
        self.epoch_s: dict[str, float] = {}  # cell -> mean measured epoch_s (tuning order)
        self.epoch_n: dict[str, int] = {}
        # racing (mode compare): per cell, the best config, its runs and the seeds asked for
        self.best_cfg: dict[str, dict] = {}  # cell -> its best tuning config
        self.runs: dict[str, dict] = {}  # cell -> {seed: test_acc} of its best config's runs
        self.flops: dict[str, float] = {}  # cell -> target FLOPs of one complete run
        self.asked: dict[str, set] = {}  # cell -> seeds handed out or queued (any outcome)
        self.open_confirm: dict[str, int] = {}  # cell -> confirmation trials not ended yet
        self.looks: dict[str, int] = {}  # answer group -> racing looks taken
        self.decided: set[str] = set()  # answer groups racing has finished with
        self.ready = ready
        self._design = design

    def __getstate__(self):
        d = dict(self.__dict__)
        d["ready"] = None  # a runner-side callable, passed again after restore
        d["_design"] = None  # rebuilt from spec_dict
        return d

    @property
    def design(self) -> StudyDesign:
        if self._design is None:
            self._design = design_of(load_spec_dict(self.spec_dict))
        return self._design

    # ------------------------------------------------------------------ Tune's interface
    def suggest(self, trial_id: str):
        cfg = self._next(trial_id)
        if cfg is None:
            return Searcher.FINISHED if self._finished() else None
        self.live.add(trial_id)
        self.configs[trial_id] = dict(cfg)
        if cfg.get(M.PHASE) == M.PHASE_TUNE:
            self.group_of[trial_id] = self.design.group_of(cfg)
        return cfg

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        cfg = self.configs.get(trial_id)
        if cfg and M.CELL in cfg and M.EPOCH_S in result:  # running mean per cell
            c = cfg[M.CELL]
            n = self.epoch_n[c] = self.epoch_n.get(c, 0) + 1
            mean = self.epoch_s.get(c, 0.0)
            self.epoch_s[c] = mean + (float(result[M.EPOCH_S]) - mean) / n

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        self.live.discard(trial_id)
        if trial_id in self.proposal_of:
            pid = self.proposal_of.pop(trial_id)
            res = self.proposal_results.setdefault(pid, [])
            res.append(None if error or not result else result.get(M.OBJECTIVE))
            if len(res) == self.repeats:
                split, ptid = pid.split("|", 1)
                vals = [v for v in res if v is not None]
                self.proposers[split].on_trial_complete(
                    ptid, {M.OBJECTIVE: sum(vals) / len(vals)} if vals else None, error=not vals)
        cfg = self.configs.get(trial_id) or (result or {}).get("config") or {}
        # a complete run, by the one status rule (study.core.status)
        done = bool(result) and trial_status(result.get(M.EPOCH), self.target_epochs, ended=True,
                                             error=error) == COMPLETED
        if cfg.get(M.PHASE) == M.PHASE_CONFIRM and self.study_mode == "compare":
            self._confirm_ended(cfg, result if done else None)
        g = self.group_of.get(trial_id)
        if g is None:
            return
        self.ended.setdefault(g, {})[trial_id] = (
            (result.get(M.OBJECTIVE), result.get(M.TEST_ACC), result.get(M.TARGET_FLOPS))
            if done else None, cfg)
        self._maybe_confirm(g)

    def save(self, checkpoint_path: str) -> None:
        # Atomically: Tune saves the searcher with every experiment checkpoint, and a driver
        # killed during a plain write left an empty file that `study resume` could not restore
        # (the resumed study then waited for trials its searcher had lost).
        write_atomic(checkpoint_path, pickle.dumps(self.__getstate__()))

    def restore(self, checkpoint_path: str) -> None:
        ready = self.ready
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        for k, v in _ADDED_LATER.items():  # a searcher saved by an earlier version lacks these
            self.__dict__.setdefault(k, v)
        self.ready = ready
        # Trials that were live when the driver stopped are resumed by Tune, not re-suggested.
        known = _RESUMED.get(self.spec_dict.get("name"))
        if known is not None:
            self.reconcile(known)

    def reconcile(self, known: dict) -> tuple[list, list]:
        """Make the restored searcher agree with the trials Tune restores (``known``: trial id ->
        {"config", "status", "last_result"}, as ``study.state.tune_trials`` reads them). Tune
        saves the experiment state and then the searcher, and ``study resume`` may put back the
        previous complete experiment state (``study.state``), so the two can be one save apart:

        - a trial the searcher handed out that Tune does not know is gone: its configuration goes
          back to the front of its queue, to be handed out again (else the study would wait for
          it forever);
        - a trial Tune knows that the searcher has not handed out yet (the searcher's file is
          one save older) is adopted: its configuration leaves the queue (else it would run
          twice);
        - a trial Tune has ended that the searcher still counts as running (Tune will not end it
          again) ends in the searcher as it would have.

        Returns (requeued trial ids, adopted trial ids)."""
        requeued, adopted = [], []
        ended = [tid for tid, t in known.items() if t.get("status") in ("TERMINATED", "ERROR")]
        for tid in sorted(self.live - set(known)):
            cfg = dict(self.configs.pop(tid))
            self.live.discard(tid)
            g = self.group_of.pop(tid, None)
            if g is not None and self.awaiting.get(g) == tid:
                del self.awaiting[g]  # racing need not wait for it (its rerun is a new trial)
            if tid in self.proposal_of:
                self.pending_repeats.insert(0, {**cfg, "_proposal": self.proposal_of.pop(tid)})
            elif cfg.get(M.PHASE) == M.PHASE_CONFIRM:
                self.confirm_queue.insert(0, cfg)
            else:
                self.queue.insert(0, cfg)
            requeued.append(tid)

        def key(c: dict) -> str:
            return config_key({k: v for k, v in c.items() if k != "_proposal"})

        handed = {key(c) for c in self.configs.values()}
        for tid, t in known.items():
            cfg = t.get("config") or {}
            if tid in self.configs or not cfg or key(cfg) in handed:
                continue
            for q in (self.confirm_queue, self.pending_repeats, self.queue):
                i = next((i for i, c in enumerate(q) if key(c) == key(cfg)), None)
                if i is None:
                    continue
                c = q.pop(i)
                if "_proposal" in c:
                    self.proposal_of[tid] = c.pop("_proposal")
                self.live.add(tid)
                self.configs[tid] = dict(cfg)
                if cfg.get(M.PHASE) == M.PHASE_TUNE:
                    self.group_of[tid] = self.design.group_of(cfg)
                adopted.append(tid)
                break
        for tid in ended:
            if tid in self.live:
                self.on_trial_complete(tid, known[tid].get("last_result") or None,
                                       error=known[tid].get("status") == "ERROR")
        return requeued, adopted

    # ------------------------------------------------------------------ internals
    def _ok(self, cfg: dict) -> bool:
        ready = self.ready or _READY.get(self.spec_dict.get("name"))
        return ready is None or ready(cfg)

    def _pick(self, q: list[dict]) -> int | None:
        """Index of the next config of queue ``q`` to hand out (``decide.pick``)."""
        kind = "confirm" if q is self.confirm_queue else "tune" if q is self.queue else "other"
        return decide.pick(q, self._ok, kind=kind, mode=self.study_mode,
                           costs=self.costs, round_robin=self.round_robin, epoch_s=self.epoch_s)

    def _next(self, trial_id: str) -> dict | None:
        for q in (self.confirm_queue, self.pending_repeats, self.queue):
            i = self._pick(q)
            if i is not None:
                cfg = dict(q.pop(i))
                if "_proposal" in cfg:
                    self.proposal_of[trial_id] = cfg.pop("_proposal")
                return cfg
        if any(not self._ok(c) for c in self.pending_repeats):
            return None  # a proposal waits for its source model: no new proposals meanwhile
        for split, n in self.remaining.items():
            if n <= 0:
                continue
            ptid = trial_id
            cfg = self.proposers[split].suggest(ptid)
            if cfg is None or cfg == Searcher.FINISHED:
                continue
            self.remaining[split] -= 1
            pid = f"{split}|{ptid}"
            cfg = dict(cfg)
            first = {**cfg, M.REPEAT: 0}
            self.proposal_of[trial_id] = pid
            for r in range(1, self.repeats):
                self.pending_repeats.append({**cfg, M.REPEAT: r, "_proposal": pid})
            if not self._ok(first):  # its source model is still training: handed out when ready
                del self.proposal_of[trial_id]
                self.pending_repeats.insert(0, {**first, "_proposal": pid})
                return None
            return first
        return None

    def _maybe_confirm(self, g: str) -> None:
        """Queue group ``g``'s confirmation once its best is known: when every tuning trial has
        ended, the best completed one; or already when all but one have ended and none of
        those completed (stopped early or errored): the one still running is then the only
        possible best, so its confirmation starts beside it instead of after it (on the
        study's critical path: source model, tuning, confirmation). When it completes, its
        compute is recorded; its test accuracy never joins the cell's runs (it selected)."""
        ended = self.ended.get(g, {})
        awaiting = self.awaiting
        if g in self.confirmed:
            tid = awaiting.get(g)
            if tid is not None and tid in ended:  # the early-confirmed best has ended
                del awaiting[g]
                v, cfg = ended[tid]
                if v is not None and self.study_mode == "compare":
                    self.flops[cfg[M.CELL]] = v[2]
                if self.study_mode == "compare":
                    self._race_at(g)
            return
        running = [t for t, grp in self.group_of.items() if grp == g and t in self.live]
        step = decide.confirmation(ended, running, self.sizes.get(g, 0))
        if step is None:
            return
        self.confirmed.add(g)
        if step[0] == "early":
            best = dict(self.configs[step[1]])
            self.awaiting = {**awaiting, g: step[1]}
            self._queue_confirm(best, self.design.confirm_seeds)
            if self.study_mode == "compare":
                c = best[M.CELL]
                self.best_cfg[c] = best
                self.asked.setdefault(c, set()).add(int(best[M.SEED]))
            return  # racing looks once the best's own run has ended too (its compute, its slot)
        if step[0] == "best":
            _, best, flops = step
            self._queue_confirm(best, self.design.confirm_seeds)
            if self.study_mode == "compare":  # the tuning run selected: it never measures
                c = best[M.CELL]
                self.best_cfg[c] = best
                self.flops[c] = flops
                self.asked.setdefault(c, set()).add(int(best[M.SEED]))
        # else ("none"): no tuning trial of this group completed (all errored): nothing to confirm
        if self.study_mode == "compare":
            self._race_at(g)

    def _queue_confirm(self, best: dict, seeds) -> None:
        cfgs = self.design.confirm_configs(best, seeds)
        self.confirm_queue.extend(cfgs)
        for cfg in cfgs:
            c = cfg[M.CELL]
            self.asked.setdefault(c, set()).add(int(cfg[M.SEED]))
            self.open_confirm[c] = self.open_confirm.get(c, 0) + 1

    def _confirm_ended(self, cfg: dict, result: dict | None) -> None:
        c = cfg[M.CELL]
        self.open_confirm[c] = self.open_confirm.get(c, 1) - 1
        if result is not None:
            self.runs.setdefault(c, {})[int(cfg[M.SEED])] = result.get(M.TEST_ACC)
            self.flops.setdefault(c, result.get(M.TARGET_FLOPS))
        self._race_at(c)

    def _race_at(self, cell: str) -> None:
        """A racing look at every answer group that races over ``cell`` (its own; a scratch
        baseline's: every transferred group of its split, size and backbone)."""
        for group in self.design.race_groups_of(cell):
            self._race(group)

    def _race(self, group: str | None) -> None:
        """Racing, one look (``decide.racing_seeds``) once every cell of the answer group has
        ended its tuning and its confirmation trials. A group none of whose cells gets a seed
        is finished (decided or at the ceiling)."""
        d = self.design
        if not d.racing or group is None or group in self.decided:
            return
        cells = d.race_cells[group]
        awaiting = self.awaiting
        if any(c not in self.confirmed or self.open_confirm.get(c, 0) > 0 or c in awaiting
               for c in cells):
            return
        add = decide.racing_seeds(d, group, set(self.best_cfg), self.runs, self.flops, self.asked)
        self.looks[group] = self.looks.get(group, 0) + 1
        for c, seeds in add.items():
            self._queue_confirm(self.best_cfg[c], seeds)
        if not add:
            self.decided.add(group)

    def _finished(self) -> bool:
        return (not self.live and not self.queue and not self.confirm_queue
                and not self.pending_repeats and all(n <= 0 for n in self.remaining.values())
                and all(g in self.confirmed for g in self.sizes))
