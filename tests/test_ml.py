"""The ML functions on the real Ray, called as plain functions."""

import joblib
import pandas as pd
import pytest
from conftest import classification_frame
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from tasks import ml
from tasks.errors import InvalidInput


@pytest.fixture(scope="module")
def dataset(stack, ray_cluster):
    path = stack.datasets / "ml-train.csv"
    classification_frame(4000, seed=3).to_csv(path, index=False)
    return path


def test_distributed_forest_scores_like_one_forest(stack, dataset):
    config = {"n_estimators": 100, "num_partitions": 4, "max_depth": 12, "seed": 0}
    model_path = stack.models / "ml-merged.pkl"
    progress = []
    result = ml.train_distributed(dataset, config, model_path,
                                  lambda done, total: progress.append((done, total)))
    features, target = ml.features_and_target(pd.read_csv(dataset), "target")
    x_train, x_hold, y_train, y_hold = ml.holdout_split(features, target, 0, 0.2)
    single = RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0, n_jobs=2)
    single_score = single.fit(x_train, y_train).score(x_hold, y_hold)

    assert abs(result["score"] - single_score) * 100 <= 1
    merged = joblib.load(model_path)
    assert len(merged.estimators_) == merged.n_estimators == 100
    assert merged.score(x_hold, y_hold) == result["score"]
    assert len(result["partition_scores"]) == 4
    assert result["avg_score"] == pytest.approx(sum(result["partition_scores"]) / 4)
    assert progress[-1] == (4, 4)


def features_and_target(regression: bool):
    """600 rows: a class, or (regression) a float mixed from it and a feature."""
    data = classification_frame(600, seed=5)
    features, target = data.drop(columns="target"), data["target"]
    return features, target * 1.5 + features["f0"] if regression else target


@pytest.mark.parametrize("regression", [False, True])
def test_row_parallel_score_is_the_models_score(regression):
    features, target = features_and_target(regression)
    model = ml.forest(regression, n_estimators=30, random_state=1).fit(features[:400],
                                                                       target[:400])
    assert ml.row_parallel_score(model, features[400:], target[400:]) == model.score(
        features[400:], target[400:])


@pytest.mark.parametrize("regression", [False, True])
def test_the_first_trees_of_a_seeded_forest_are_the_smaller_forest(regression):
    features, target = features_and_target(regression)
    train, test = slice(0, 400), slice(400, None)
    grown = ml.forest(regression, n_estimators=40, max_depth=6, random_state=7)
    grown.fit(features[train], target[train])
    sizes = [5, 17, 40]
    separate = [ml.forest(regression, n_estimators=size, max_depth=6, random_state=7)
                .fit(features[train], target[train]) for size in sizes]

    assert ml.prefix_scores(grown, sizes, features[test], target[test]) == [
        model.score(features[test], target[test]) for model in separate]
    assert len(grown.estimators_) == grown.n_estimators == 40
    for size, model in zip(sizes, separate, strict=True):
        grown.estimators_, grown.n_estimators = model.estimators_[:size], size
        predict = "predict" if regression else "predict_proba"
        assert (getattr(grown, predict)(features[test]) ==
                getattr(model, predict)(features[test])).all()


def test_forest_groups_share_a_forest_across_n_estimators_largest_first():
    grid = [{"n_estimators": 5, "max_depth": 2}, {"max_depth": 3},
            {"n_estimators": 300, "max_depth": 2}, {"n_estimators": 50, "max_depth": 3}]
    assert ml.forest_groups(grid) == [({"max_depth": 2}, [0, 2]), ({"max_depth": 3}, [1, 3])]


def test_grid_search_scores_every_combination_as_grid_search_cv_does(dataset):
    grid = [{"n_estimators": n, "max_depth": d} for n in (5, 20) for d in (2, None)]
    progress = []
    result = ml.grid_search(dataset, grid, cv=3,
                            progress=lambda done, total: progress.append(total))
    # One Ray task per (group of combinations that differ only in n_estimators, fold).
    assert result["ray_tasks"] == 6 == progress[-1]
    assert [entry["params"] for entry in result["results"]] == grid
    # The run's own Ray cluster is one node on loopback (tests/run-in-netns.sh).
    assert all(entry["nodes"] == ["127.0.0.1"] for entry in result["results"])
    best = max(result["results"], key=lambda entry: entry["mean_score"])
    assert (result["best_params"], result["best_score"]) == (best["params"], best["mean_score"])
    assert result["best_params"]["max_depth"] is None

    features, target = ml.features_and_target(pd.read_csv(dataset), "target")
    search = GridSearchCV(
        RandomForestClassifier(random_state=0, n_jobs=1),
        [{key: [value] for key, value in params.items()} for params in grid],
        cv=StratifiedKFold(3, shuffle=True, random_state=0), refit=False,
    ).fit(features, target)
    for index, entry in enumerate(result["results"]):
        assert entry["fold_scores"] == [
            search.cv_results_[f"split{fold}_test_score"][index] for fold in range(3)]
        assert entry["mean_score"] == search.cv_results_["mean_test_score"][index]


def test_batch_predictions_write_one_file_per_batch(stack, dataset):
    model_path = stack.models / "ml-small.pkl"
    ml.train_distributed(dataset, {"n_estimators": 8, "num_partitions": 2}, model_path)
    batches = []
    for index, rows in enumerate((30, 50)):
        batch = stack.datasets / f"ml-batch-{index}.csv"
        classification_frame(rows, seed=10 + index).drop(columns="target").to_csv(
            batch, index=False)
        batches.append(batch)
    result = ml.predict_batches(model_path, batches, None)
    assert result["total_predictions"] == 80
    for entry, rows in zip(result["batches"], (30, 50), strict=True):
        written = pd.read_csv(entry["output_path"])
        assert list(written.columns) == ["prediction"] and len(written) == rows == entry[
            "predictions"]


@pytest.mark.parametrize(("grid", "message"), [
    ([], "non-empty list"),
    ("max_depth=3", "non-empty list"),
    ([{"max_depth": 3}, {}], r"param_grid\[1\] must be a non-empty dict"),
    ([{"depth": 3}], r"unknown parameters \['depth'\]"),
    ([{"max_depth": -4}], "max_depth"),
    ([{"n_estimators": 0}], r"param_grid\[0\]\['n_estimators'\] must be an integer from 1"),
])
def test_malformed_grids_are_refused(dataset, grid, message):
    with pytest.raises(InvalidInput, match=message):
        ml.grid_search(dataset, grid)


@pytest.mark.parametrize(("content", "config", "message"), [
    ("", {}, "is empty"),
    ("f0,target\n", {}, "no data rows"),
    ("f0,label\n1,0\n2,1\n", {}, "target column 'target' not in the dataset"),
    ("f0,target\n1,0\n", {"n_estimators": 2, "num_partitions": 3}, "exceeds n_estimators"),
    ("f0,target\n1,0\n", {"trees": 3}, r"unknown model_config keys \['trees'\]"),
])
def test_bad_training_input_is_refused(stack, ray_cluster, content, config, message):
    path = stack.datasets / "ml-bad.csv"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        ml.train_distributed(path, config, stack.models / "never.pkl")
    assert not (stack.models / "never.pkl").exists()
