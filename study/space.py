"""What a study samples, and in what order: the Tune searcher.

Mode ``compare`` (default): the trials are known up front (``study.cells.tuning_configs``: each
cell's learning rates, interleaved across cells). Mode ``best``: one Optuna search per split over
(backbone, init, frozen depth, lr) (``DefineByRun``), so what a split's trials teach the sampler
never steers another split. In both modes, once every tuning trial of a group (cell / split) has
ended, the group's best configuration (highest final ``val_acc`` among its trials that reached
``target_epochs``) is queued again with ``confirm.seeds`` new seeds.

The searcher is plain data plus (mode best) Optuna's samplers: Tune saves it with every
experiment checkpoint (``save`` / ``restore``), so a resumed study continues the same sequence.
"""
from __future__ import annotations

import math
import pickle

from ray.tune.search import Searcher

from study import cells as C
from study.core.spec import Spec, load_spec_dict
from study.core import metrics as M


class DefineByRun:
    """Optuna define-by-run space of one split (mode best; a picklable callable, so Tune can
    checkpoint the searcher). Frozen depth is conditional: ``frozen_depth__<backbone>`` per
    backbone; init ``scratch`` trains every stage (depth 0, not sampled)."""

    def __init__(self, spec_dict: dict, split: str):
        self.spec = load_spec_dict(spec_dict)  # validated once, not per sample
        self.split = split

    def __call__(self, trial):
        spec = self.spec
        backbone = trial.suggest_categorical(
            M.BACKBONE, [b.name for b in spec.backbones if C.valid_inits(spec, b.name)])
        inits = C.valid_inits(spec, backbone)
        # One categorical per backbone: Optuna's distributions must not change between trials.
        init = trial.suggest_categorical(f"{M.INIT}__{backbone}", inits) if len(inits) > 1 else inits[0]
        depth = 0
        if init != "scratch":
            ds = spec.backbone(backbone).depth_list()
            depth = (trial.suggest_categorical(f"{M.FROZEN_DEPTH}__{backbone}", ds)
                     if len(ds) > 1 else ds[0])
        trial.suggest_float(M.LR, spec.lr.low, spec.lr.high, log=True)
        cell = C.Cell(self.split, backbone, init, depth, "")
        return {M.SPLIT: self.split, M.INIT: init, M.FROZEN_DEPTH: depth,
                M.SEED: spec.search.seed, M.CELL: cell.id, M.PHASE: M.PHASE_TUNE}


def _sampler(spec: Spec, seed: int):
    import optuna

    n = spec.search.num_samples
    if spec.search.algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, n // 3)))
    if spec.search.algorithm == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    return optuna.samplers.RandomSampler(seed=seed)


class StudySearcher(Searcher):
    """Hands out the study's tuning trials, then each group's confirmation trials.

    ``ready(config) -> bool`` (set by the runner, not saved) may hold back a trial whose source
    model is not trained yet; other trials go first."""

    def __init__(self, spec_dict: dict):
        super().__init__(metric=M.OBJECTIVE, mode=M.MODE)
        spec = load_spec_dict(spec_dict)
        self.spec_dict = spec_dict
        self.study_mode = spec.search.mode
        self.target_epochs = spec.target_epochs
        self.sizes = C.group_sizes(spec)
        self.queue: list[dict] = []  # tuning configs not handed out yet (compare, best+grid)
        self.remaining: dict[str, int] = {}  # mode best + optuna: samples left per split
        self.proposers: dict = {}  # mode best + optuna: split -> OptunaSearch
        if self.study_mode == "compare":
            self.queue = C.tuning_configs(spec)
        elif spec.search.algorithm == "grid":
            pts = C.best_grid(spec)
            self.queue = [{**p, M.SEED: spec.search.seed} for r in range(spec.search.repeats)
                          for p in pts]
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
        self.epoch_s: dict[str, float] = {}  # cell -> mean measured epoch_s (tuning order)
        self.epoch_n: dict[str, int] = {}
        self.ready = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["ready"] = None  # a runner-side callable, set again after restore
        return d

    # ------------------------------------------------------------------ Tune's interface
    def suggest(self, trial_id: str):
        cfg = self._next(trial_id)
        if cfg is None:
            return Searcher.FINISHED if self._finished() else None
        self.live.add(trial_id)
        self.configs[trial_id] = dict(cfg)
        if cfg.get(M.PHASE) == M.PHASE_TUNE:
            self.group_of[trial_id] = str(cfg[M.CELL] if self.study_mode == "compare" else cfg[M.SPLIT])
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
        g = self.group_of.get(trial_id)
        if g is None:
            return
        done = bool(result) and not error and int(result.get(M.EPOCH, 0)) >= self.target_epochs
        cfg = self.configs.get(trial_id) or (result or {}).get("config") or {}
        self.ended.setdefault(g, {})[trial_id] = (result.get(M.OBJECTIVE) if done else None, cfg)
        self._maybe_confirm(g)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        ready = self.ready
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        self.ready = ready
        # Trials that were live when the driver stopped are resumed by Tune, not re-suggested.

    # ------------------------------------------------------------------ internals
    def _ok(self, cfg: dict) -> bool:
        return self.ready is None or self.ready(cfg)

    def _pick(self, q: list[dict]) -> int | None:
        """Index of the next config of queue ``q`` to hand out (its source model ready).

        The tuning queue (mode compare) goes round by round: cells with the most trials still to
        hand out first, so every cell gets its k-th trial before any its (k+1)-th. Inside a round,
        the cells whose trials measured the longest epochs so far go first (longest processing
        time first; cells not yet measured keep the queue's order ahead of measured ones): a
        cell's confirmation can only start once all its tuning trials have ended, so its
        slowest cell started last would leave slots idle at the study's end. Other queues: FIFO."""
        idx = [i for i, cfg in enumerate(q) if self._ok(cfg)]
        if not idx:
            return None
        if q is not self.queue or self.study_mode != "compare":
            return idx[0]
        left: dict[str, int] = {}
        for cfg in q:
            left[cfg[M.CELL]] = left.get(cfg[M.CELL], 0) + 1
        return max(idx, key=lambda i: (left[q[i][M.CELL]], self.epoch_s.get(q[i][M.CELL], math.inf), -i))

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
            ptid = f"{trial_id}"
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
        ended = self.ended.get(g, {})
        if g in self.confirmed or len(ended) < self.sizes.get(g, 0):
            return
        self.confirmed.add(g)
        done = [(v, cfg) for v, cfg in ended.values() if v is not None and cfg]
        if not done:
            return  # no tuning trial of this group completed (all errored): nothing to confirm
        best = max(done, key=lambda x: x[0])[1]
        spec = load_spec_dict(self.spec_dict)
        self.confirm_queue.extend(C.confirm_configs(spec, best))

    def _finished(self) -> bool:
        return (not self.live and not self.queue and not self.confirm_queue
                and not self.pending_repeats and all(n <= 0 for n in self.remaining.values())
                and all(g in self.confirmed for g in self.sizes))
