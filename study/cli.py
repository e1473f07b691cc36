"""The `study` command line.

Exit status: 0 success, 2 bad input (spec, data, paths, storage: the message names the field,
value and rule), 1 failure while running, 130 interrupted (Ctrl-C: the line printed names the
`study resume` that continues it).
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C

# The study directory of the running `run` / `resume`, for the line printed on Ctrl-C.
_study_dir: str | None = None

# --smoke: the same study, shrunk to a minute-scale check that everything runs end to end
# (one trial per cell, no confirmation seeds).
SMOKE = {"target_epochs": 2, "source": {"epochs": 1},
         "data": {"max_train_per_class": 40, "max_test_per_class": 20,
                  "target_train_per_class": None},
         "search": {"num_samples": 1, "trials_per_cell": 1, "repeats": 1},
         "confirm": {"seeds": 0},
         "scheduler": {"grace_period": 1}}


def _overrides(args) -> dict:
    o: dict = {}
    if getattr(args, "smoke", False):
        o = {k: dict(v) if isinstance(v, dict) else v for k, v in SMOKE.items()}
    if getattr(args, "data_root", None):
        o.setdefault("data", {})["root"] = args.data_root
    if getattr(args, "storage", None):
        o["storage"] = args.storage
    if getattr(args, "name", None):
        o["name"] = args.name
    return o


def _check_classes(spec, data_root) -> str | None:
    """Split classes against the data (loaded, or CIFAR-10's known classes when data.root is
    null: the download's classes are known without downloading). Returns a line to print."""
    from study.core.spec import CIFAR10_CLASSES, resolve_classes

    if data_root or spec.data.root:
        from trainables.data import load_dataset
        ds = load_dataset(spec.data.root, cache_dir=spec.data.cache_dir,
                          image_size=spec.data.image_size)
        resolve_classes(spec, ds.classes)
        from trainables.trainable import check_target_sizes
        check_target_sizes(spec, ds)  # the largest size against each target class
        return (f"data: {len(ds.train_y)} train / {len(ds.test_y)} test images, classes "
                f"{', '.join(ds.classes)}")
    resolve_classes(spec, CIFAR10_CLASSES)
    return None


def cmd_validate(args) -> int:
    from study.core.design import design_of
    from study.core.spec import load_spec

    spec = load_spec(args.spec, _overrides(args))
    line = _check_classes(spec, args.data_root)
    if line:
        print(line)
    design = design_of(spec)
    c = design.trial_counts()
    racing = f", racing up to {c['total_max']}" if design.racing else ""
    print(f"{args.spec}: valid study {spec.name!r}: {len(spec.splits)} split(s), "
          f"{len(spec.backbones)} backbone(s), inits {', '.join(spec.inits)}, {c['cells']} cells, "
          f"{c['total']} trials ({c['tuning']} tuning + {c['confirm']} confirmation{racing}; mode "
          f"{spec.search.mode}, {spec.search.algorithm}, {spec.scheduler.type})")
    return EXIT_OK


def cmd_plan(args) -> int:
    from study.plan import format_plan, make_plan
    from study.core.spec import load_spec

    spec = load_spec(args.spec, _overrides(args))
    _check_classes(spec, args.data_root)
    per_class = test_per_class = None
    if args.data_root or spec.data.root:
        from trainables.data import load_dataset
        import numpy as np
        ds = load_dataset(spec.data.root, cache_dir=spec.data.cache_dir,
                          image_size=spec.data.image_size)
        per_class = int(np.bincount(ds.train_y).min())
        test_per_class = int(np.bincount(ds.test_y).min()) if len(ds.test_y) else None
    print(format_plan(spec, make_plan(spec, per_class, args.flops_per_s,
                                      test_per_class=test_per_class)))
    return EXIT_OK


def _report_summary(summary: dict) -> int:
    from study.core.status import COMPLETED, STOPPED

    return EXIT_OK if summary[COMPLETED] + summary[STOPPED] > 0 else EXIT_FAIL


def _check_storage(spec) -> None:
    """Before anything starts: results can be written where the spec says (exit 2 if not).
    A local path is checked down to the study directory (<storage>/<name>); a URI at the
    storage itself (probed with a short time limit)."""
    from study.checks import check_storage
    from study.core.layout import is_uri
    from study.runner import study_dir

    check_storage(spec.storage if is_uri(spec.storage) else study_dir(spec))


def _interrupted(e) -> int:
    print(e, file=sys.stderr)  # StudyInterrupted: "interrupted: continue with study resume DIR"
    return EXIT_INTERRUPTED


def _positive(text: str) -> float:
    """argparse type: a number > 0 (argparse names the option and the value when it fails)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (x > 0 and x < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return x


def cmd_run(args) -> int:
    global _study_dir
    from study.runner import run_study, study_dir
    from study.core.spec import load_spec

    spec = load_spec(args.spec, _overrides(args))
    _check_storage(spec)
    if not (args.data_root or spec.data.root):
        _check_classes(spec, None)  # before anything downloads
    from study.interrupt import StudyInterrupted  # imports Ray, as run_study does

    _study_dir = study_dir(spec)
    simulate = None
    if args.simulate:
        simulate = {"flops_per_s": args.flops_per_s, "compression": args.compression}
    elif args.flops_per_s is not None or args.compression != 1.0:
        print("error: --flops-per-s and --compression only apply with --simulate", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _report_summary(run_study(spec, simulate=simulate))
    except StudyInterrupted as e:
        return _interrupted(e)


def cmd_resume(args) -> int:
    global _study_dir
    from study.interrupt import StudyInterrupted
    from study.runner import normalize_study_path, resume_study

    _study_dir = normalize_study_path(args.path)
    try:
        return _report_summary(resume_study(args.path))
    except StudyInterrupted as e:
        return _interrupted(e)


def cmd_submit(args) -> int:
    from study import jobs
    from study.core.spec import load_spec

    spec = load_spec(args.spec, _overrides(args))
    from study.core.layout import is_uri

    if is_uri(spec.storage):  # a path is on the cluster: the job's own `study run` checks it
        from study.checks import check_storage

        check_storage(spec.storage)
    job = jobs.submit(spec, args.address)
    if not args.wait:
        return EXIT_OK
    status = jobs.follow(args.address, job)
    print(f"job {job}: {status}")
    return EXIT_OK if status == "SUCCEEDED" else EXIT_FAIL


def cmd_jobs(args) -> int:
    from study import jobs

    print(jobs.format_jobs(jobs.list_jobs(args.address), all_jobs=args.all))
    return EXIT_OK


def cmd_status(args) -> int:
    from study import jobs

    print(jobs.format_status(jobs.job_info(args.address, args.job)))
    return EXIT_OK


def cmd_logs(args) -> int:
    from study import jobs

    if args.follow:
        status = jobs.follow(args.address, args.job)
        print(f"job {args.job}: {status}")
        return EXIT_OK if status == "SUCCEEDED" else EXIT_FAIL
    sys.stdout.write(jobs.logs(args.address, args.job))
    return EXIT_OK


def cmd_stop(args) -> int:
    from study import jobs

    status = jobs.stop(args.address, args.job)
    info = jobs.job_info(args.address, args.job)
    results = (info.metadata or {}).get(jobs.META_RESULTS, "<study dir>")
    print(f"job {args.job}: {status}; continue it later with `study resume {results}` "
          f"(on the cluster)")
    return EXIT_OK


def cmd_report(args) -> int:
    from analysis.report import make_report

    _, text = make_report(args.path, args.out, force=args.force, tolerance=args.tolerance)
    print(text)
    return EXIT_OK


def cmd_compare(args) -> int:
    from analysis.compare import make_compare

    _, text = make_compare(args.paths, args.out, force=args.force, tolerance=args.tolerance)
    print(text)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="study", description="Transfer-learning hyperparameter "
                                "studies on Ray Tune (conditions compared per cell, tuned inside it).")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a study spec without running it")
    v.add_argument("spec")
    v.add_argument("--data-root", help="also check the split classes against this data")

    r = sub.add_parser("run", help="run a study (embedded local Ray, or RAY_ADDRESS's cluster)")
    r.add_argument("spec")
    r.add_argument("--data-root", help="image folder, .tar[.gz|.xz] archive or "
                   "cifar-10-batches-py (default: the spec's data.root; none: download CIFAR-10)")
    r.add_argument("--storage", help="results directory or URI (default: the spec's storage)")
    r.add_argument("--name", help="study name (default: the spec's name)")
    r.add_argument("--smoke", action="store_true",
                   help="tiny data, 3 trials, 2 epochs: check that the study runs end to end")
    r.add_argument("--simulate", action="store_true",
                   help="a rehearsal: the real driver, searcher, scheduler, source tasks, storage, "
                   "resume and report, with a cost model in place of training (each epoch lasts "
                   "its planned FLOPs / throughput / compression; synthetic accuracies). "
                   "Everything it writes says SIMULATED")
    r.add_argument("--flops-per-s", type=float, default=None,
                   help="with --simulate: device throughput in FLOP/s (default: the plan's probe "
                   "of this machine)")
    r.add_argument("--compression", type=_positive, default=1.0,
                   help="with --simulate: run this many times faster than the modelled device "
                   "(default 1)")

    addr_help = ("the cluster's Jobs API, http://HOST:8265 (default: $RAY_API_SERVER_ADDRESS, "
                 "then $RAY_ADDRESS)")
    sb = sub.add_parser("submit", help="submit a study to a Ray cluster (Ray Jobs API)")
    sb.add_argument("spec")
    sb.add_argument("--address", help=addr_help)
    sb.add_argument("--data-root", help="data path on the cluster (absolute) or URI")
    sb.add_argument("--storage", help="results: absolute path on the cluster, or s3:// gs:// URI")
    sb.add_argument("--name", help="study name (default: the spec's name)")
    sb.add_argument("--smoke", action="store_true", help="as for `study run`")
    sb.add_argument("--wait", action="store_true",
                    help="follow the job's logs; exit 0 iff the job succeeded")
    jb = sub.add_parser("jobs", help="studies submitted to the cluster")
    jb.add_argument("--address", help=addr_help)
    jb.add_argument("--all", action="store_true", help="every Ray job, not only studies")
    for name, helptext in (("status", "a submitted study's state"),
                           ("logs", "a submitted study's output"),
                           ("stop", "stop a submitted study (it can be resumed)")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("job", help="the job id printed by `study submit`")
        q.add_argument("--address", help=addr_help)
        if name == "logs":
            q.add_argument("-f", "--follow", action="store_true",
                           help="stream until the job ends; exit 0 iff it succeeded")

    pl = sub.add_parser("plan", help="cells, trials, FLOPs per phase and device-hours of a "
                        "study, before anything runs")
    pl.add_argument("spec")
    pl.add_argument("--data-root", help="count the data's images (default: CIFAR-10's 5000 per "
                    "class, capped by data.max_train_per_class)")
    pl.add_argument("--flops-per-s", type=float, help="training throughput in FLOP/s (default: "
                    "a short probe of each backbone on this machine)")

    s = sub.add_parser("resume", help="continue an interrupted study")
    s.add_argument("path", help="the study directory (<storage>/<name>)")

    rp = sub.add_parser("report", help="accuracy-vs-compute report of a study (also partial)")
    rp.add_argument("path", help="the study directory (<storage>/<name>) or its URI")
    rp.add_argument("-o", "--out", help="output directory (default: <study dir>/report)")
    rp.add_argument("--force", action="store_true",
                    help="overwrite a report of another study in the output directory")

    tol_help = ("Answer: a cheaper depth counts as good as the best when its mean accuracy is "
                "within this many points and not significantly lower (default: the spec's "
                "report.tolerance, 1 point)")
    rp.add_argument("--tolerance", type=float, metavar="POINTS", help=tol_help)
    cp = sub.add_parser("compare", help="compare two or more studies side by side")
    cp.add_argument("paths", nargs="+", metavar="STUDY_DIR")
    cp.add_argument("-o", "--out", help="output directory (default: ./compare-A-vs-B)")
    cp.add_argument("--force", action="store_true",
                    help="overwrite a report of other studies in the output directory")
    cp.add_argument("--tolerance", type=float, metavar="POINTS", help=tol_help)

    args = p.parse_args(argv)
    from study.terminal import configure_output

    configure_output()  # no ANSI colour codes from Ray when output is not a terminal
    if args.command in ("report", "compare"):  # no Ray/torch imports needed for reports
        from analysis.load import ReportError

        try:
            return {"report": cmd_report, "compare": cmd_compare}[args.command](args)
        except ReportError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from study.checks import StorageError
    from study.jobs import AddressError, JobError
    from study.runner import StudyExistsError
    from study.core.spec import SpecError
    from study.core.errors import DataError, WeightsUnavailable

    try:
        return {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run, "resume": cmd_resume,
                "submit": cmd_submit, "jobs": cmd_jobs, "status": cmd_status, "logs": cmd_logs,
                "stop": cmd_stop}[args.command](args)
    except (SpecError, DataError, StudyExistsError, WeightsUnavailable, AddressError,
            StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ImportError as e:
        from study.trackers import TrackerUnavailable  # imports Ray: only on this path

        if not isinstance(e, TrackerUnavailable):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune started
        print(_interrupt_line(), file=sys.stderr)
        return EXIT_INTERRUPTED


def _interrupt_line() -> str:
    """What to print on KeyboardInterrupt: the `study resume` line when the study directory
    holds a Tune experiment to continue, else just that it was interrupted."""
    if _study_dir:
        try:
            from ray import tune

            from study.interrupt import resume_line

            if tune.Tuner.can_restore(_study_dir):
                return resume_line(_study_dir)
        except Exception:  # a half-written experiment or unreachable storage: no hint
            pass
        return f"interrupted before the study's trials started: {_study_dir} has nothing to resume"
    return "interrupted"


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
