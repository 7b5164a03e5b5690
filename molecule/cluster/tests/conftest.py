"""The cluster's drill counts at the end of the run, like the default scenario's."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from run_summary import write_summary


def pytest_terminal_summary(terminalreporter):
    write_summary(terminalreporter)
