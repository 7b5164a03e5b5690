"""hyperparameter_search, distributed_training and batch_predictions against scikit-learn
in one process (this benchmark driver) on the same data."""

import filecmp
from pathlib import Path

import joblib
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

from bench.data import classification_frame, write_csv
from bench.measure import Samples, timed
from bench.report import Benchmark, Measure, Series
from bench.stack import Stack

SEED = 0
FOLDS = 3
# The spec's grid: 27 combinations (it says 81).
SPEC_GRID = [
    {"n_estimators": n, "max_depth": d, "min_samples_split": s}
    for n in (50, 100, 200) for d in (10, 20, 30) for s in (2, 5, 10)
]
# 2x and 4x the grid: every combination again with a larger min_samples_leaf.
LEAF_SIZES = {1: (1,), 2: (1, 2), 4: (1, 2, 4, 8)}
GRID_FEATURES = 20
TRAINING = {"n_estimators": 100, "max_depth": 20, "num_partitions": 4}
TRAINING_FEATURES = 20
BATCHES = 3
BATCH_FEATURES = 8
MODEL_TRAINING_ROWS = 20_000
# Each benchmark first runs its task once, untimed, on this many rows: the worker's Ray
# connection, Ray's workers and their imports are warm before anything is timed.
WARM_UP_ROWS = 1_000


def grid(multiple: int) -> list[dict]:
    if multiple == 1:
        return SPEC_GRID
    return [{**params, "min_samples_leaf": leaf}
            for params in SPEC_GRID for leaf in LEAF_SIZES[multiple]]


def grid_search_cv(dataset: Path, param_grid: list[dict]) -> tuple[dict, list[float]]:
    """GridSearchCV(n_jobs=-1) over the same combinations, in the same order, on the same
    folds (StratifiedKFold, shuffled with the task's seed), without the final refit the
    task does not do either: (best params, every combination's mean score)."""
    data = pd.read_csv(dataset)
    search = GridSearchCV(
        RandomForestClassifier(n_jobs=1, random_state=SEED),
        [{key: [value] for key, value in params.items()} for params in param_grid],
        cv=StratifiedKFold(FOLDS, shuffle=True, random_state=SEED), n_jobs=-1, refit=False,
    )
    search.fit(data.drop(columns=["target"]), data["target"])
    return search.best_params_, [float(score) for score in search.cv_results_["mean_test_score"]]


def hyperparameter_search(stack: Stack, data_root: Path, rows: int,
                          multiples: tuple[int, ...], repetitions: int) -> Benchmark:
    dataset = write_csv(classification_frame(rows, GRID_FEATURES, SEED),
                        data_root / "grid.csv")
    benchmark = Benchmark(
        "hyperparameter_search",
        f"{rows:,} rows x {GRID_FEATURES} features, {FOLDS} stratified folds; "
        "alternative: GridSearchCV(RandomForestClassifier(), n_jobs=-1), same folds",
    )

    def task(param_grid: list[dict]) -> tuple[float, dict]:
        return stack.run("tasks.ml_tasks.hyperparameter_search", param_grid=param_grid,
                         dataset_path=str(dataset), cv=FOLDS)

    # Untimed, for both: the task's warm-up, joblib's process pool.
    task(SPEC_GRID[:2])
    grid_search_cv(dataset, SPEC_GRID[:2])
    medians: dict[str, list[float]] = {"hyperparameter_search": [], "GridSearchCV": []}
    for multiple in multiples:
        param_grid = grid(multiple)
        project, alternative = Samples(), Samples()
        differences = []
        for _ in range(repetitions):
            seconds, result = task(param_grid)
            project.add(seconds)
            seconds, (best, scores) = timed(
                lambda param_grid=param_grid: grid_search_cv(dataset, param_grid))
            alternative.add(seconds)
            differences.append(score_differences(result, best, scores))
        benchmark.measures.append(Measure(
            "hyperparameter_search", f"{len(param_grid)} combinations: time", "s",
            project, alternative,
            "<= 0.95x GridSearchCV, same best params and mean scores", 0.95,
            condition=not any(differences)))
        benchmark.notes.append(
            f"{len(param_grid)} combinations: best params {result['best_params']}; best "
            "params and every combination's mean score the same as GridSearchCV's in every "
            "repetition" if not any(differences) else
            f"{len(param_grid)} combinations DIFFER from GridSearchCV: "
            + "; ".join(filter(None, differences)))
        medians["hyperparameter_search"].append(project.median)
        medians["GridSearchCV"].append(alternative.median)
    benchmark.series.append(Series(
        "hyperparameter_search: time by grid size (median)", "combinations", "seconds",
        [len(grid(multiple)) for multiple in multiples], medians))
    return benchmark


def score_differences(result: dict, best: dict, scores: list[float]) -> str:
    """Where the task's answer differs from GridSearchCV's ('' when it does not)."""
    differences = [
        f"{entry['params']}: mean score {entry['mean_score']!r} vs {score!r}"
        for entry, score in zip(result["results"], scores, strict=True)
        if entry["mean_score"] != score
    ]
    if result["best_params"] != best:
        differences.insert(0, f"best params {result['best_params']} vs {best}")
    return "; ".join(differences)


def single_forest(dataset: Path, model_path: Path) -> float:
    """One RandomForestClassifier(n_jobs=-1) on the task's train/holdout split, saved like
    the task saves its model; returns the holdout score."""
    data = pd.read_csv(dataset)
    features, target = data.drop(columns=["target"]), data["target"]
    x_train, x_hold, y_train, y_hold = train_test_split(
        features, target, test_size=0.2, random_state=SEED, stratify=target)
    model = RandomForestClassifier(n_estimators=TRAINING["n_estimators"],
                                   max_depth=TRAINING["max_depth"], n_jobs=-1,
                                   random_state=SEED).fit(x_train, y_train)
    joblib.dump(model, model_path)
    return float(model.score(x_hold, y_hold))


def distributed_training(stack: Stack, data_root: Path, rows: int,
                         repetitions: int) -> Benchmark:
    dataset = write_csv(classification_frame(rows, TRAINING_FEATURES, SEED),
                        data_root / "training.csv")
    benchmark = Benchmark(
        "distributed_training",
        f"{rows:,} rows x {TRAINING_FEATURES} features, 20% holdout, model_config "
        f"{TRAINING}; alternative: one RandomForestClassifier(n_jobs=-1), same split",
    )
    config = {**TRAINING, "name": "bench-training"}
    warm_up = write_csv(classification_frame(WARM_UP_ROWS, TRAINING_FEATURES, SEED),
                        data_root / "training-warm-up.csv")
    stack.run("tasks.ml_tasks.distributed_training", model_config=config,
              dataset_path=str(warm_up))
    time_project, time_alternative = Samples(), Samples()
    score_project, score_alternative = Samples(), Samples()
    for _ in range(repetitions):
        seconds, result = stack.run("tasks.ml_tasks.distributed_training",
                                    model_config=config, dataset_path=str(dataset))
        time_project.add(seconds)
        score_project.add(result["score"])
        seconds, score = timed(lambda: single_forest(dataset, data_root / "single.pkl"))
        time_alternative.add(seconds)
        score_alternative.add(score)
    difference = score_project.median - score_alternative.median
    benchmark.measures += [
        Measure("distributed_training", "time", "s", time_project, time_alternative,
                "<= 1.1x one forest", 1.1),
        Measure("distributed_training", "holdout score", "accuracy", score_project,
                score_alternative, "within 1 point of one forest's",
                condition=abs(difference) <= 0.01, digits=4),
    ]
    benchmark.notes.append(f"holdout accuracy difference: {difference * 100:+.2f} points")
    return benchmark


def predict_each(model_path: Path, batches: list[Path], output_dir: Path) -> int:
    """One process: load the model, then read, predict and write each batch in turn."""
    model = joblib.load(model_path)
    features = list(model.feature_names_in_)
    total = 0
    for batch in batches:
        predictions = model.predict(pd.read_csv(batch)[features])
        pd.DataFrame({"prediction": predictions}).to_csv(
            output_dir / f"{batch.stem}.predictions.csv", index=False)
        total += len(predictions)
    return total


def batch_predictions(stack: Stack, data_root: Path, rows: int,
                      repetitions: int) -> Benchmark:
    model = RandomForestClassifier(n_estimators=100, max_depth=20, n_jobs=-1,
                                   random_state=SEED)
    training = classification_frame(MODEL_TRAINING_ROWS, BATCH_FEATURES, SEED)
    model.fit(training.drop(columns=["target"]), training["target"])
    model.set_params(n_jobs=1)  # as distributed_training saves its models
    # The task unpickles models only from the stack's models_dir.
    model_path = data_root / "models" / "batch-model.pkl"
    model_path.parent.mkdir(exist_ok=True)
    joblib.dump(model, model_path)
    batches = [
        write_csv(classification_frame(rows, BATCH_FEATURES, SEED + index, with_target=False),
                  data_root / f"batch-{index}.csv")
        for index in range(1, BATCHES + 1)
    ]
    outputs = {"project": data_root / "predictions-project",
               "alternative": data_root / "predictions-plain"}
    for directory in outputs.values():
        directory.mkdir()
    benchmark = Benchmark(
        "batch_predictions",
        f"{BATCHES} batches x {rows:,} rows x {BATCH_FEATURES} features, a 100-tree forest "
        "(max_depth 20); alternative: one process predicting each batch in turn",
    )
    warm_up = write_csv(classification_frame(WARM_UP_ROWS, BATCH_FEATURES, SEED,
                                             with_target=False),
                        data_root / "batch-warm-up.csv")
    stack.run("tasks.ml_tasks.batch_predictions", model_path=str(model_path),
              data_batches=[str(warm_up)], output_dir=str(outputs["project"]))
    project, alternative = Samples(), Samples()
    for _ in range(repetitions):
        seconds, result = stack.run("tasks.ml_tasks.batch_predictions",
                                    model_path=str(model_path),
                                    data_batches=[str(batch) for batch in batches],
                                    output_dir=str(outputs["project"]))
        project.add(seconds)
        seconds, _ = timed(lambda: predict_each(model_path, batches, outputs["alternative"]))
        alternative.add(seconds)
    for batch in batches:
        name = f"{batch.stem}.predictions.csv"
        if not filecmp.cmp(outputs["project"] / name, outputs["alternative"] / name,
                           shallow=False):
            raise RuntimeError(f"the predictions for {batch.name} differ")
    benchmark.measures.append(Measure(
        "batch_predictions", "time", "s", project, alternative,
        "<= 1.0x (not slower; the issue sets no bound)", 1.0))
    benchmark.notes.append(f"{result['total_predictions']:,} predictions, identical files")
    return benchmark

