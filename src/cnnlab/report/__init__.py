"""The report of one run: figures and a single self-contained HTML page, with the learning
curves' diagnosis in words (`diagnose`) and the run's later evaluations."""

from cnnlab.report.diagnosis import Finding, diagnose
from cnnlab.report.html import render_report
from cnnlab.report.view import Misclassified

__all__ = ["Finding", "Misclassified", "diagnose", "render_report"]
