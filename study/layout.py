"""Names of the files a study directory holds beside Tune's experiment (no heavy imports:
the analysis package reads studies without importing Ray or torch)."""

STUDY_FILE = "study.yaml"  # the resolved spec
PROVENANCE_FILE = "provenance.json"  # code/package versions, data fingerprint, seed, command
SUMMARY_FILE = "summary.json"  # written when a run ends
SOURCES_DIR = "sources"  # shared source models: sources/<key>/{model.pt,info.json,users.txt}
