"""The ML work behind tasks.ml_tasks, as plain functions over Ray (no Celery here).

Datasets are a CSV file or a directory of CSV files; every column except the target
(``target`` unless told otherwise) is a feature and must be numeric. A float target is
a regression (score: R^2), anything else a classification (score: accuracy); scores are
fractions in [0, 1] on a holdout or on cross-validation folds.
"""

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import ray
from sklearn.base import is_regressor
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from tasks.errors import InvalidInput
from tasks.paths import atomic_write
from tasks.raycluster import gather

Progress = Callable[[int, int], None] | None

# Forest parameters a caller may set; the rest (n_jobs, random_state, ...) are ours.
FOREST_PARAMS = {
    "max_depth", "min_samples_split", "min_samples_leaf", "min_weight_fraction_leaf",
    "max_features", "max_leaf_nodes", "min_impurity_decrease", "bootstrap", "max_samples",
    "criterion", "class_weight", "ccp_alpha",
}
TRAINING_KEYS = {"n_estimators", "num_partitions", "target", "name", "seed", "test_size"}
HOLDOUT_FRACTION = 0.2
# Upper bounds that keep a typo from filling the cluster or the worker's memory: more
# partitions than this only queue up, and the merged forest lives in one worker process.
MAX_TRAINING_COUNTS = {"n_estimators": 10_000, "num_partitions": 1024}
DEFAULT_TREES = RandomForestClassifier().n_estimators
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_dataset(path: Path) -> pd.DataFrame:
    """Read a CSV file or every CSV of a directory (same columns) into one frame."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise InvalidInput(f"dataset directory {path} holds no .csv files")
    frames = []
    for file in files:
        try:
            frame = pd.read_csv(file)
        except pd.errors.EmptyDataError:
            raise InvalidInput(f"dataset {file} is empty (no header, no rows)") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"dataset {file} is not a readable CSV: {exc}") from None
        if frames and list(frame.columns) != list(frames[0].columns):
            raise InvalidInput(
                f"dataset {file} has columns {list(frame.columns)}, but {files[0]} has "
                f"{list(frames[0].columns)}; every file of a dataset needs the same columns"
            )
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    if data.empty:
        raise InvalidInput(f"dataset {path} has a header but no data rows")
    return data


def features_and_target(data: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    if target not in data.columns:
        raise InvalidInput(
            f"target column {target!r} not in the dataset (columns: {list(data.columns)}); "
            "set model_config['target']"
        )
    features = data.drop(columns=[target])
    if features.columns.empty:
        raise InvalidInput("the dataset has no feature columns besides the target")
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise InvalidInput(f"feature columns must be numeric; not numeric: {non_numeric}")
    return features, data[target]


def is_regression(target: pd.Series) -> bool:
    return pd.api.types.is_float_dtype(target)


def forest(regression: bool, **params: Any):
    return (RandomForestRegressor if regression else RandomForestClassifier)(n_jobs=1, **params)


def holdout_split(features: pd.DataFrame, target: pd.Series, seed: int, test_size: float):
    """The deterministic train/holdout split distributed_training scores on."""
    stratify = None if is_regression(target) or target.value_counts().min() < 2 else target
    return train_test_split(
        features, target, test_size=test_size, random_state=seed, stratify=stratify
    )


def _forest_params(config: dict[str, Any], allowed_extra: set[str]) -> dict[str, Any]:
    unknown = set(config) - FOREST_PARAMS - allowed_extra
    if unknown:
        raise InvalidInput(
            f"unknown model_config keys {sorted(unknown)}; allowed: "
            f"{sorted(FOREST_PARAMS | allowed_extra)}"
        )
    return {key: value for key, value in config.items() if key in FOREST_PARAMS}


def is_count(value: Any) -> bool:
    """A whole number of things, at least 1 (True and False are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def trees_per_partition(n_estimators: Any, num_partitions: Any) -> list[int]:
    for name, value in (("n_estimators", n_estimators), ("num_partitions", num_partitions)):
        maximum = MAX_TRAINING_COUNTS[name]
        if not is_count(value) or value > maximum:
            raise InvalidInput(f"model_config[{name!r}] must be an integer from 1 to "
                               f"{maximum}, got {value!r}")
    if num_partitions > n_estimators:
        raise InvalidInput(f"num_partitions ({num_partitions}) exceeds n_estimators "
                           f"({n_estimators}): every partition needs at least one tree")
    base, extra = divmod(n_estimators, num_partitions)
    return [base + (index < extra) for index in range(num_partitions)]


def _as_invalid_input(call: Callable[[], Any], what: str) -> Any:
    """scikit-learn rejects bad parameters with ValueError: that is the caller's input."""
    try:
        return call()
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


@ray.remote(num_cpus=1)
def _fit_partition(train, holdout, *, regression: bool, params: dict, n_trees: int, seed: int):
    """Grow one partition's trees; return the forest and its holdout score."""
    features, target = train
    model = forest(regression, n_estimators=n_trees, random_state=seed, **params)
    _as_invalid_input(lambda: model.fit(features, target), f"model_config {params}")
    return model, float(model.score(*holdout))


def row_parallel_score(model, features: pd.DataFrame, target: pd.Series) -> float:
    """``model.score``, bit for bit, with the rows predicted in one thread per core: a
    row's prediction does not depend on the other rows, and trees predict without the GIL.
    """
    chunks = np.array_split(np.arange(len(features)), min(os.cpu_count() or 1, len(features)))
    with ThreadPoolExecutor(len(chunks)) as pool:
        predictions = np.concatenate(
            list(pool.map(lambda rows: model.predict(features.iloc[rows]), chunks)))
    metric = r2_score if is_regressor(model) else accuracy_score
    return float(metric(target, predictions))


def train_distributed(
    dataset: Path, model_config: dict[str, Any], model_path: Path, progress: Progress = None
) -> dict[str, Any]:
    """Train ``num_partitions`` forests in parallel Ray tasks and merge them into one.

    Each partition grows n_estimators/num_partitions trees on the full training set with
    its own seed (a random forest's trees are independent, so the union of the partial
    forests is a forest of n_estimators trees, as good as one trained in one piece) and
    scores itself on the holdout. The train and holdout sets go into Ray's object store
    once.
    """
    config = dict(model_config)
    params = _forest_params(config, TRAINING_KEYS)
    trees = trees_per_partition(config.get("n_estimators", 100), config.get("num_partitions", 4))
    seed = config.get("seed", 0)
    features, target = features_and_target(read_dataset(dataset), config.get("target", "target"))
    x_train, x_hold, y_train, y_hold = _as_invalid_input(
        lambda: holdout_split(features, target, seed, config.get("test_size", HOLDOUT_FRACTION)),
        "cannot split the dataset into train and holdout",
    )
    regression = is_regression(target)
    train_ref, holdout_ref = ray.put((x_train, y_train)), ray.put((x_hold, y_hold))
    refs = [
        _fit_partition.remote(train_ref, holdout_ref, regression=regression, params=params,
                              n_trees=n_trees, seed=seed + index)
        for index, n_trees in enumerate(trees)
    ]
    partitions, partition_scores = zip(*gather(refs, progress), strict=True)
    combined = partitions[0]
    combined.estimators_ = [tree for part in partitions for tree in part.estimators_]
    combined.n_estimators = len(combined.estimators_)
    with atomic_write(model_path) as tmp:
        joblib.dump(combined, tmp)
    return {
        "avg_score": float(np.mean(partition_scores)),
        "score": row_parallel_score(combined, x_hold, y_hold),
        "partition_scores": list(partition_scores),
        "model_path": str(model_path),
        "n_estimators": combined.n_estimators,
        "num_partitions": len(trees),
        "problem": "regression" if regression else "classification",
        "train_rows": len(x_train),
        "holdout_rows": len(x_hold),
    }


def model_name(model_config: dict[str, Any], default: str) -> str:
    name = model_config.get("name", default)
    if not (isinstance(name, str) and NAME_PATTERN.match(name)):
        raise InvalidInput(f"model_config['name'] {name!r} must be letters, digits, '_.-'")
    return name


def validate_grid(param_grid: Any) -> list[dict[str, Any]]:
    if not isinstance(param_grid, list) or not param_grid:
        raise InvalidInput("param_grid must be a non-empty list of parameter dicts, "
                           f"got {param_grid!r}")
    for index, params in enumerate(param_grid):
        if not isinstance(params, dict) or not params:
            raise InvalidInput(f"param_grid[{index}] must be a non-empty dict, got {params!r}")
        unknown = set(params) - FOREST_PARAMS - {"n_estimators"}
        if unknown:
            raise InvalidInput(f"param_grid[{index}] has unknown parameters {sorted(unknown)}; "
                               f"allowed: {sorted(FOREST_PARAMS | {'n_estimators'})}")
        trees, most = forest_size(params), MAX_TRAINING_COUNTS["n_estimators"]
        if not is_count(trees):
            raise InvalidInput(f"param_grid[{index}]['n_estimators'] must be an integer "
                               f"from 1 to {most}, got {trees!r}")
        if trees > most:
            raise InvalidInput(f"param_grid[{index}]['n_estimators'] is {trees}; at most {most}")
    return param_grid


def forest_groups(grid: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[int]]]:
    """Group the combinations that differ only in n_estimators: (their other parameters,
    their indexes in the grid), the group with the largest forest first.

    A forest grown with a fixed random_state draws its trees' seeds one after the other,
    so its first k trees are the trees of the k-tree forest with that random_state: one
    forest of the group's largest size scores every size of the group.
    """
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for index, params in enumerate(grid):
        others = {key: value for key, value in params.items() if key != "n_estimators"}
        groups.setdefault(repr(sorted(others.items())), (others, []))[1].append(index)
    return sorted(groups.values(),
                  key=lambda group: -max(forest_size(grid[index]) for index in group[1]))


def forest_size(params: dict[str, Any]) -> int:
    return params.get("n_estimators", DEFAULT_TREES)


def prefix_scores(model, sizes: list[int], features, target) -> list[float]:
    """The score of the forest made of ``model``'s first n trees, for each n of sizes."""
    grown = model.estimators_
    scores = []
    try:
        for size in sizes:
            model.estimators_, model.n_estimators = grown[:size], size
            scores.append(float(model.score(features, target)))
    finally:
        model.estimators_, model.n_estimators = grown, len(grown)
    return scores


# SPREAD: with Ray's default policy, short folds all ran on the submitting node (its
# leased workers took the next fold before a lease on another node was granted).
@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def _score_fold(data, *, regression: bool, params: dict, sizes: list[int], train_rows,
                test_rows, seed: int):
    """Grow the largest forest of ``sizes`` on one fold and score each size's prefix."""
    features, target = data
    model = forest(regression, random_state=seed, n_estimators=max(sizes), **params)
    _as_invalid_input(
        lambda: model.fit(features.iloc[train_rows], target.iloc[train_rows]),
        f"parameters {params}",
    )
    scores = prefix_scores(model, sizes, features.iloc[test_rows], target.iloc[test_rows])
    return scores, ray.util.get_node_ip_address()


def grid_search(
    dataset: Path, param_grid: Any, *, target: str = "target", cv: int = 3, seed: int = 0,
    progress: Progress = None,
) -> dict[str, Any]:
    """Cross-validate every combination: one Ray task per (forest group, fold).

    The dataset goes into Ray's object store once and every task reads it from there.
    Combinations that differ only in n_estimators share one forest per fold (see
    forest_groups); the scores are those of separate forests, tree for tree. Each
    combination reports the addresses of the Ray nodes its folds ran on.
    """
    grid = validate_grid(param_grid)
    if not isinstance(cv, int) or isinstance(cv, bool) or cv < 2:
        raise InvalidInput(f"cv must be an integer >= 2, got {cv!r}")
    features, labels = features_and_target(read_dataset(dataset), target)
    regression = is_regression(labels)
    splitter = (KFold if regression else StratifiedKFold)(cv, shuffle=True, random_state=seed)
    folds = _as_invalid_input(lambda: list(splitter.split(features, labels)),
                              f"cannot make {cv} folds")
    data_ref = ray.put((features, labels))
    groups = forest_groups(grid)
    refs = [
        _score_fold.remote(data_ref, regression=regression, params=params,
                           sizes=[forest_size(grid[index]) for index in indexes],
                           train_rows=train, test_rows=test, seed=seed)
        for params, indexes in groups
        for train, test in folds
    ]
    folds_done = iter(gather(refs, progress))
    fold_scores: dict[int, list[float]] = {}
    nodes: dict[int, set[str]] = {}
    for _, indexes in groups:
        for _ in folds:
            scores, node = next(folds_done)
            for index, score in zip(indexes, scores, strict=True):
                fold_scores.setdefault(index, []).append(score)
                nodes.setdefault(index, set()).add(node)
    results = [
        {"params": params, "mean_score": float(np.mean(fold_scores[index])),
         "fold_scores": fold_scores[index], "nodes": sorted(nodes[index])}
        for index, params in enumerate(grid)
    ]
    best = max(results, key=lambda result: result["mean_score"])
    return {
        "best_params": best["params"],
        "best_score": best["mean_score"],
        "results": results,
        "cv": cv,
        "ray_tasks": len(refs),
    }


def load_model(model_path: Path):
    try:
        model = joblib.load(model_path)
    except Exception as exc:  # unpickling reports anything from EOFError to KeyError
        raise InvalidInput(f"model {model_path} cannot be loaded ({exc}): use a model file "
                           "saved by distributed_training") from None
    if not hasattr(model, "predict") or not hasattr(model, "feature_names_in_"):
        raise InvalidInput(f"{model_path} is not a model trained on named features "
                           "(train it with distributed_training)")
    return model


def predictions_path(batch: Path, output_dir: Path | None) -> Path:
    return (output_dir or batch.parent) / f"{batch.stem}.predictions.csv"


@ray.remote(num_cpus=1)
def _predict_batch(model, batch: str, output: str) -> int:
    features = list(model.feature_names_in_)
    try:
        data = pd.read_csv(batch)
    except pd.errors.EmptyDataError:
        raise InvalidInput(f"batch {batch} is empty (no header, no rows)") from None
    missing = [column for column in features if column not in data.columns]
    if missing:
        raise InvalidInput(f"batch {batch} lacks the model's feature columns {missing}")
    if data.empty:
        raise InvalidInput(f"batch {batch} has a header but no data rows")
    predictions = pd.DataFrame({"prediction": model.predict(data[features])})
    with atomic_write(Path(output)) as tmp:
        predictions.to_csv(tmp, index=False)
    return len(predictions)


def predict_batches(
    model_path: Path, batches: list[Path], output_dir: Path | None, progress: Progress = None
) -> dict[str, Any]:
    """Predict every batch in its own Ray task; the model is put in the object store once."""
    model_ref = ray.put(load_model(model_path))
    outputs = [predictions_path(batch, output_dir) for batch in batches]
    refs = [
        _predict_batch.remote(model_ref, str(batch), str(output))
        for batch, output in zip(batches, outputs, strict=True)
    ]
    counts = gather(refs, progress)
    return {
        "total_predictions": int(sum(counts)),
        "batches": [
            {"batch": str(batch), "predictions": count, "output_path": str(output)}
            for batch, count, output in zip(batches, counts, outputs, strict=True)
        ],
        "model_path": str(model_path),
    }

