"""Names of the files a study directory holds beside Tune's experiment (no heavy imports:
the analysis package reads studies without importing Ray or torch)."""

STUDY_FILE = "study.yaml"  # the resolved spec
PROVENANCE_FILE = "provenance.json"  # code/package versions, data fingerprint, seed, command
SUMMARY_FILE = "summary.json"  # written when a run ends
SOURCES_DIR = "sources"  # shared source models: sources/<key>/{model.pt,info.json,users.txt}

# Trial statuses, one vocabulary for the runner, the progress lines, summary.json and reports.
COMPLETED = "completed"  # reached target_epochs
STOPPED = "stopped"  # stopped early by the scheduler (fewer epochs, no error)
ERRORED = "errored"  # failed after its retries
RUNNING = "running"  # not ended: the study is running or was interrupted
STATUSES = (COMPLETED, STOPPED, ERRORED, RUNNING)
