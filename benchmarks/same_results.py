"""Do two runs of a study give the same trials and accuracies? Trial by trial, keyed by
(cell, learning rate, seed): the validation accuracy of every epoch both ran, and the test
accuracy of trials both completed.

    python benchmarks/same_results.py STUDY_DIR_A STUDY_DIR_B

Used to check that a refactor keeps behaviour identical (e.g. the quick example on two commits,
same seed). The last line is ``identical_trials=<n>/<m>``.
"""
import glob
import json
import sys


def load(d: str) -> dict:
    out = {}
    for f in glob.glob(f"{d}/*/result.json"):
        rows = [json.loads(line) for line in open(f) if line.strip()]
        if rows:
            c = rows[0]["config"]
            out[(c["cell"], round(c["lr"], 12), rows[0]["seed"])] = (
                [r["val_acc"] for r in rows], rows[-1].get("test_acc"))
    return out


def main(a_dir: str, b_dir: str) -> None:
    a, b = load(a_dir), load(b_dir)
    shared = sorted(set(a) & set(b))
    print(f"trials: {len(a)} and {len(b)}; same configurations: {set(a) == set(b)}")
    same = test_same = test_both = other_length = 0
    for k in shared:
        (va, ta), (vb, tb) = a[k], b[k]
        n = min(len(va), len(vb))
        ok = va[:n] == vb[:n]
        other_length += len(va) != len(vb)
        if ta is not None and tb is not None:
            test_both += 1
            test_same += ta == tb
            ok = ok and ta == tb
        same += ok
        if not ok:
            print("differs:", k, va, vb, ta, tb)
    print(f"val_acc identical on every shared epoch and test_acc identical: {same}/{len(shared)}; "
          f"test_acc identical {test_same}/{test_both} completed in both; "
          f"run to a different epoch: {other_length}")
    print(f"identical_trials={same}/{len(shared)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
