"""Study results -> tables, plots and reports (accuracy versus compute)."""
