"""What the fault drills counted: each drill reports the tasks it submitted and those that
completed; the lines are printed at once and again at the end of the run, whatever the
capture settings (the scenarios' conftest calls write_drill_counts from its
pytest_terminal_summary)."""

DRILL_COUNTS: list[str] = []


def report_drill(record_property, drill: str, submitted: int, done: int, **more) -> None:
    """Print a drill's counts now and keep them for the end of the run (and the JUnit XML)."""
    details = "".join(f", {key.replace('_', ' ')} {value}" for key, value in more.items())
    line = f"{drill}: submitted {submitted}, completed {done}, lost {submitted - done}{details}"
    print(line)
    DRILL_COUNTS.append(line)
    record_property("submitted", submitted)
    record_property("completed", done)
    for key, value in more.items():
        record_property(key, value)


def write_drill_counts(terminalreporter) -> None:
    if DRILL_COUNTS:
        terminalreporter.section("drill counts")
        for line in DRILL_COUNTS:
            terminalreporter.write_line(line)
