"""The benchmarks' sizes: full (``make bench``) and quick (``make bench QUICK=1``).

A module of its own: the task benchmarks receive them pickled in another process.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    repetitions: int
    grid_rows: int
    grid_multiples: tuple[int, ...]
    training_rows: int
    csv_rows: tuple[int, ...]
    batch_rows: int
    ping_calls: int
    fire_and_forget_tasks: int
    operation_repetitions: int
    # Also measure the stack redeployed with celery_ray_task_events=false (two site.yml runs).
    overhead_events_off: bool


FULL = Sizes(repetitions=3, grid_rows=5_000, grid_multiples=(1, 2, 4),
             training_rows=100_000, csv_rows=(1_000_000, 5_000_000, 10_000_000),
             batch_rows=1_000_000, ping_calls=2_000, fire_and_forget_tasks=5_000,
             operation_repetitions=2, overhead_events_off=True)
# Under 10 minutes on 2 cores: the cold converge alone takes about 3 of them.
QUICK = Sizes(repetitions=2, grid_rows=500, grid_multiples=(1,),
              training_rows=20_000, csv_rows=(200_000, 1_000_000, 2_000_000),
              batch_rows=200_000, ping_calls=1_000, fire_and_forget_tasks=2_000,
              operation_repetitions=1, overhead_events_off=False)
