"""What the end-to-end tests report besides pass or fail: each fault drill's counts (the
tasks it submitted and those that completed) and each alert's time to fire. A line is
printed at once and again at the end of the run, whatever the capture settings (the
scenarios' conftest calls write_summary from its pytest_terminal_summary)."""

DRILL_COUNTS = "drill counts"
ALERT_TIMES = "alert times"
_SECTIONS: dict[str, list[str]] = {DRILL_COUNTS: [], ALERT_TIMES: []}


def report(section: str, line: str) -> None:
    print(line)
    _SECTIONS[section].append(line)


def report_drill(record_property, drill: str, submitted: int, done: int, **more) -> None:
    """A drill's counts, also kept in the JUnit XML."""
    details = "".join(f", {key.replace('_', ' ')} {value}" for key, value in more.items())
    report(DRILL_COUNTS,
           f"{drill}: submitted {submitted}, completed {done}, lost {submitted - done}{details}")
    record_property("submitted", submitted)
    record_property("completed", done)
    for key, value in more.items():
        record_property(key, value)


def write_summary(terminalreporter) -> None:
    for title, lines in _SECTIONS.items():
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)
