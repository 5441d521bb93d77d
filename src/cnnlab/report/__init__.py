"""The report of one run: figures and a single self-contained HTML page."""

from cnnlab.report.html import render_report
from cnnlab.report.view import Misclassified

__all__ = ["Misclassified", "render_report"]
