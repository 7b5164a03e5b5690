"""The monitoring's cost on the stack: CPU and memory of the broker's metrics (tasks.metrics),
the node and Redis exporters, Prometheus and Alertmanager, at idle and while a burst of
ping tasks runs through the deployed default worker.

    python -m bench.monitoring_cost [--container NAME] [--tasks 2000] [--window-seconds 60]

The container is the local stack's (`make up`) unless named; any converged container of
the project with a monitoring group will do. CPU is each unit's main process (user + system
time from /proc/PID/stat over the window, as a share of one core), memory its proportional
set size (the peak of samples taken every half second). The cost comes with each scrape: a
window spans several scrape intervals (printed with the results), idle or beginning with
the burst. Not counted: what the scrapes cost the services
they read (Flower's /metrics, Ray's metrics agent, Redis's INFO).
"""

import argparse
import subprocess
import threading
import time

from bench import local_stack

EXPORTERS = ["celery-metrics.service", "prometheus-node-exporter.service",
             "prometheus-redis-exporter.service"]
SERVER = ["prometheus.service", "prometheus-alertmanager.service"]
SAMPLE_SECONDS = 0.5
# Run in the container as the service user, with the units' environment (with-stack-env).
BURST = """
import sys, time
from tasks import app
start = time.monotonic()
count = int(sys.argv[1])
results = [app.send_task("tasks.simple_tasks.ping", queue="default") for _ in range(count)]
for result in results:
    result.get(timeout=600)
print(f"{time.monotonic() - start:.1f}")
"""


def in_container(container: str, *argv: str) -> str:
    return subprocess.run(["docker", "exec", container, *argv], capture_output=True,
                          text=True, check=True).stdout


def main_pids(container: str) -> dict[str, int]:
    pids = {unit: int(in_container(container, "systemctl", "show", "--property=MainPID",
                                   "--value", unit)) for unit in EXPORTERS + SERVER}
    stopped = [unit for unit, pid in pids.items() if not pid]
    if stopped:
        raise SystemExit(f"not running in {container}: {', '.join(stopped)} (converge the "
                         "stack with a monitoring group first)")
    return pids


def read(container: str, pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per unit: (CPU seconds so far, proportional set size in MB), in one docker exec."""
    script = "getconf CLK_TCK; " + " ".join(
        f"cat /proc/{pid}/stat; grep ^Pss: /proc/{pid}/smaps_rollup;" for pid in pids.values())
    lines = iter(in_container(container, "sh", "-c", script).splitlines())
    ticks = int(next(lines))
    readings = {}
    for unit in pids:
        fields = next(lines).rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        readings[unit] = (cpu, int(next(lines).split()[1]) / 1024)
    return readings


def window(container: str, pids: dict[str, int], until_done) -> dict[str, tuple[float, float]]:
    """Per unit over the window that until_done() lasts: (CPU % of one core, peak PSS MB)."""
    peaks = dict.fromkeys(pids, 0.0)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            for unit, (_, pss) in read(container, pids).items():
                peaks[unit] = max(peaks[unit], pss)

    before, started = read(container, pids), time.monotonic()
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        until_done()
    finally:
        done.set()
        sampler.join()
    after, seconds = read(container, pids), time.monotonic() - started
    return {unit: (100 * (after[unit][0] - before[unit][0]) / seconds,
                   max(peaks[unit], after[unit][1])) for unit in pids}


def scrape_interval(container: str) -> str:
    config = in_container(container, "cat", "/etc/prometheus/prometheus.yml")
    return next(line.split(":", 1)[1].strip() for line in config.splitlines()
                if line.strip().startswith("scrape_interval:"))


def report(title: str, measured: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'unit':36} {'CPU % of a core':>16} {'peak PSS MB':>12}")
    for group in (EXPORTERS, SERVER):
        for unit in group:
            cpu, pss = measured[unit]
            print(f"  {unit:36} {cpu:16.2f} {pss:12.1f}")
        print(f"  {'  sum':36} {sum(measured[u][0] for u in group):16.2f} "
              f"{sum(measured[u][1] for u in group):12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--container", default=local_stack.CONTAINER)
    parser.add_argument("--tasks", type=int, default=2000, help="pings in the burst")
    parser.add_argument("--window-seconds", type=float, default=60,
                        help="length of each window (the burst's lasts at least this long)")
    args = parser.parse_args()
    pids = main_pids(args.container)
    print(f"{args.container}: Prometheus scrapes every {scrape_interval(args.container)}")
    report(f"idle, {args.window_seconds:.0f} s",
           window(args.container, pids, lambda: time.sleep(args.window_seconds)))
    durations = []

    def burst() -> None:
        started = time.monotonic()
        durations.append(float(in_container(
            args.container, "runuser", "-u", "celery", "--", "/opt/celery-ray/with-stack-env",
            "python", "-c", BURST, str(args.tasks))))
        time.sleep(max(0.0, args.window_seconds - (time.monotonic() - started)))

    measured = window(args.container, pids, burst)
    report(f"{args.window_seconds:.0f} s beginning with a burst of {args.tasks:,} pings through "
           f"the default worker (sent and answered in {durations[0]:.1f} s)", measured)


if __name__ == "__main__":
    main()
