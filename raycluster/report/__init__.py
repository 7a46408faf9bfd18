"""Static HTML cluster report: `write_report` (in-memory results) and `report_run` (a run folder)."""
from raycluster.report.build import ReportData, ReportOptions, report_run, write_report

__all__ = ["ReportData", "ReportOptions", "report_run", "write_report"]
