"""Reading a study for its report: the spec's settings the report needs (tolerance, alpha,
racing, confirmation seeds, early stopping), and the ``CellView``: everything the report says
about cells, computed once per study by the rules of ``analysis.cells``."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd

from analysis import cells as C
from analysis import frontier as F
from analysis.load import ReportError, Study
from study.core import design as D
from study.core import metrics as M
from study.core import spec as S
from study.core.status import COMPLETED

METRIC = M.TEST_ACC  # what the answer compares: test accuracy of each cell's completed runs
# Opens every report (and `study report`'s summary) of a rehearsal; no option removes it.
SIMULATED_BANNER = ("SIMULATED STUDY (study run --simulate): a rehearsal. No model was trained: "
                    "times are the plan's FLOPs over a modelled throughput, accuracies come from "
                    "the cost model in trainables/simulate.py. It checks the spec, the cluster, "
                    "storage, time, cost and the report's shape; its numbers are not results.")


def spec_default(key: str):
    """The spec schema's default of a dotted key ("report.tolerance", "confirm.seeds"): the one
    place the report takes spec defaults from (``study.core.spec.default_of``)."""
    return S.default_of(key)


def _spec_get(spec, *keys, default=None):
    cur = spec
    for k in keys:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(k)
    return default if cur is None else cur


def tolerance_points(spec: dict, tolerance=None) -> float:
    """The Answer's tolerance (non-inferiority margin) in accuracy points: ``tolerance`` if given, else the spec's
    ``report.tolerance``, else its default. A bad ``tolerance`` argument raises ReportError; a
    bad spec value (older or hand-edited study.yaml) falls back to the default."""
    if tolerance is not None:
        try:
            v = float(tolerance)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0:
            raise ReportError(f"tolerance: {tolerance!r} is not a number of accuracy points >= 0")
        return v
    default = float(spec_default("report.tolerance"))
    try:
        v = float(_spec_get(spec, "report", "tolerance", default=default))
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) and v >= 0 else default


def answer_alpha(spec: dict) -> tuple[float, tuple | None]:
    """(the spec's report.alpha, racing): ``report.alpha`` (its default when absent) and, when
    the study raced (``confirm.max_seeds`` above ``confirm.seeds``), (seeds, ceiling), so the
    report spends alpha over the looks as the racing did (``stats.look_alpha``)."""
    try:
        alpha = float(_spec_get(spec, "report", "alpha", default=spec_default("report.alpha")))
    except (TypeError, ValueError):
        alpha = float(spec_default("report.alpha"))
    k = confirm_seeds(spec)
    try:
        ceiling = int(_spec_get(spec, "confirm", "max_seeds", default=k) or k)
    except (TypeError, ValueError):
        ceiling = k
    mode = str(_spec_get(spec, "search", "mode", default="compare"))
    return alpha, D.race_levels(mode, k, ceiling)


def confirm_seeds(spec: dict) -> int:
    """The spec's confirm.seeds k (its default when the section lacks it); 0 for a study written
    before the confirm phase existed (no ``confirm`` section)."""
    if not isinstance(spec, dict) or "confirm" not in spec:
        return 0
    try:
        return max(0, int(_spec_get(spec, "confirm", "seeds",
                                    default=spec_default("confirm.seeds"))))
    except (TypeError, ValueError):
        return 0


STOPPING_NAMES = {"halving": "successive halving", "asha": "ASHA", "fifo": "FIFO"}


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """The early-stopping rule a study ran (spec ``scheduler.type``, one of
    study.core.spec.SCHEDULERS), in the report's words."""
    type: str

    @classmethod
    def of(cls, spec: dict) -> "EarlyStopping":
        return cls(str(_spec_get(spec, "scheduler", "type",
                                 default=spec_default("scheduler.type"))))

    @property
    def stops(self) -> bool:
        return self.type != "fifo"

    @property
    def name(self) -> str:
        """The rule's name: successive halving, ASHA, FIFO."""
        return STOPPING_NAMES.get(self.type, self.type)

    @property
    def label(self) -> str:
        """What 'early stopping: ...' says: successive halving, ASHA, none (FIFO)."""
        return self.name if self.stops else f"none ({self.name})"

    @property
    def stopped(self) -> str:
        """What a stopped trial is called."""
        return f"stopped by {self.name}" if self.stops else "stopped early (FIFO stops none)"

    @property
    def not_complete(self) -> str:
        """The trials drawn hollow in the scatter plots."""
        return f"{self.stopped} or incomplete" if self.stops else "incomplete"


def _never_counted(stoppings: list[EarlyStopping]) -> str:
    """'a trial stopped by ASHA or that errored' (rule text), over one or more studies."""
    stops = sorted({st.name for st in stoppings if st.stops})
    if not stops:
        return "a trial that errored or did not finish"
    return f"a trial stopped by {' or '.join(stops)} or that errored"


@dataclasses.dataclass
class CellView:
    """Everything the report says about cells, computed once per study (analysis.cells)."""
    runs: pd.DataFrame
    summary: pd.DataFrame  # test accuracy per cell
    val: pd.DataFrame  # validation accuracy per cell (same runs)
    coverage: pd.DataFrame
    answer: pd.DataFrame
    gains: pd.DataFrame
    frontier: pd.DataFrame
    comparisons: pd.DataFrame  # one row per depth of each answer group (C.comparison_rows)
    tol_points: float
    alpha: float  # the spec's report.alpha: per group, for every truth
    racing: tuple | None  # (seeds, ceiling) when the study raced (alpha spent over its looks)
    seeds: int  # confirm seeds k from the spec (0: none)
    spec_tol_points: float  # the tolerance the study was specified with
    post_hoc: bool  # the tolerance was chosen after the results (study report --tolerance)
    mode: str  # "compare", "best", or "old" (a study written before cells)
    stopping: EarlyStopping  # the early-stopping rule the study ran


def recorded_design(spec: dict):
    """The design of the study's recorded spec (``study.yaml``), or None when it does not load
    (a study written by an older version, or a hand-edited file): the report then knows the
    cells its trials name, and reads the settings it needs from the file itself."""
    try:
        return D.design_of(S.load_spec_dict(spec))
    except (ValueError, TypeError):  # SpecError (a ValueError), or not a mapping at all
        return None


def cell_view(s: Study, tolerance=None) -> CellView:
    tol = tolerance_points(s.spec, tolerance)
    mode = str(_spec_get(s.spec, "search", "mode", default=""))
    if not mode:
        new = (s.trials[M.PHASE] == M.PHASE_CONFIRM).any() or "confirm" in s.spec
        mode = "compare" if new else "old"
    runs = C.cell_runs(s.trials)
    summ = C.cell_summary(runs, METRIC)
    design = recorded_design(s.spec)
    alpha, racing = answer_alpha(s.spec)
    answer = C.depth_answer(runs, tolerance=tol / 100, alpha=alpha, metric=METRIC,
                            racing=racing)
    spec_tol = tolerance_points(s.spec)
    return CellView(runs=runs, summary=summ, val=C.cell_summary(runs, M.VAL_ACC),
                    coverage=C.cell_coverage(s.trials, runs,
                                             design.cells if design else None), answer=answer,
                    gains=C.transfer_gain_cells(runs, answer=answer),
                    frontier=C.cell_frontier(summ), comparisons=C.comparison_rows(answer),
                    tol_points=tol, alpha=alpha, racing=racing, seeds=confirm_seeds(s.spec),
                    spec_tol_points=spec_tol, post_hoc=not math.isclose(tol, spec_tol),
                    mode=mode, stopping=EarlyStopping.of(s.spec))


def no_run_cells(v: CellView) -> list[str]:
    return v.coverage.loc[v.coverage["runs"] == 0, M.CELL].tolist()


def single_run_cells(v: CellView) -> list[str]:
    return v.summary.loc[v.summary["n"] < 2, M.CELL].tolist()


def mode_note(v: CellView) -> str | None:
    if v.mode == "best":
        return ("Caution: this study used search.mode 'best' (one search for the single best "
                "configuration, early stopping across each split): cells were not tuned "
                "equally, and a cell's runs are whatever completed, so the comparison of "
                "depths is indicative only.")
    if v.mode == "old":
        return ("Caution: this study was written before cells existed (no tune/confirm phases): "
                "every trial is treated as a tune trial, cells were not tuned equally and "
                "early stopping compared trials across cells, so the comparison of depths is "
                "indicative only.")
    return None


def splits_of(t: pd.DataFrame) -> list[str]:
    return sorted(map(str, t[M.SPLIT].dropna().unique()))


def best_trials(t: pd.DataFrame):
    """(split, its completed trial with the best validation accuracy, or None) per split."""
    for sp in splits_of(t):
        c = t[(t[M.SPLIT] == sp) & (t["status"] == COMPLETED) & t[M.TEST_CONFUSION].notna()]
        yield sp, (None if c.empty else c.loc[c[M.VAL_ACC].idxmax()])


def accounting(s: Study) -> dict:
    """Compute spent under the study's early stopping vs the FIFO estimate, in FLOPs
    (``analysis.frontier.early_stopping_accounting``)."""
    return F.early_stopping_accounting(s.trials, s.target_epochs)
