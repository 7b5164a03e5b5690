"""ML tasks (queue ``ml``): thin Celery wrappers around tasks.ml, run on Ray."""

from datetime import UTC, datetime

from tasks.base import DURABLE, enqueue_once, task
from tasks.errors import InvalidInput
from tasks.paths import guarded_path, model_file, output_path
from tasks.paths import output_dir as guarded_output_dir
from tasks.raycluster import ensure_ray
from tasks.settings import settings


def _config_dict(model_config) -> dict:
    if model_config is None:
        return {}
    if not isinstance(model_config, dict):
        raise InvalidInput(f"model_config must be a dict, got {model_config!r}")
    return model_config


@task(soft_time_limit=3300, time_limit=3600, **DURABLE)
def distributed_training(self, model_config=None, dataset_path=None):
    """Train a RandomForest as num_partitions Ray tasks and save the merged model.

    model_config: n_estimators (100), num_partitions (4), target ('target'), name (the
    model file is <models_dir>/<name>.pkl; default model-<UTC timestamp>), seed (0),
    test_size (0.2), and RandomForest parameters (max_depth, min_samples_split, ...).
    Returns avg_score (mean holdout score of the partitions), score (the merged
    model's), partition_scores, model_path, n_estimators, num_partitions, problem.
    """
    config = _config_dict(model_config)
    from tasks import ml

    default_name = "model-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = ml.model_name(config, default_name)
    dataset = guarded_path(dataset_path, must_exist=True, what="dataset_path")
    model_path = output_path(f"{settings().models_dir}/{name}.pkl", what="model path")
    ensure_ray()
    return ml.train_distributed(dataset, config, model_path, self.report_progress)


@task(soft_time_limit=3300, time_limit=3600, **DURABLE)
def hyperparameter_search(self, param_grid=None, dataset_path=None, target="target", cv=3):
    """Cross-validate every combination of param_grid on Ray, one task per fold of each
    group of combinations that differ only in n_estimators (they share one forest).

    Returns best_params, best_score (mean CV score) and results: every combination's
    params, mean_score, fold_scores and nodes (the addresses of the Ray nodes its folds
    ran on).
    """
    from tasks import ml

    ml.validate_grid(param_grid)
    dataset = guarded_path(dataset_path, must_exist=True, what="dataset_path")
    ensure_ray()
    return ml.grid_search(dataset, param_grid, target=target, cv=cv,
                          progress=self.report_progress)


@task(soft_time_limit=1500, time_limit=1800, **DURABLE)
def batch_predictions(self, model_path=None, data_batches=None, output_dir=None):
    """Predict every batch CSV in parallel on Ray with the model at model_path, which must
    lie under models_dir (unpickling a file runs its code).

    Each batch's predictions go to <output_dir or the batch's dir>/<stem>.predictions.csv
    (one column, ``prediction``, in the batch's row order). Returns total_predictions,
    batches [{batch, predictions, output_path}] and model_path.
    """
    if not isinstance(data_batches, list) or not data_batches:
        raise InvalidInput(f"data_batches must be a non-empty list of CSV paths, "
                           f"got {data_batches!r}")
    model = model_file(model_path)
    batches = [guarded_path(batch, must_exist=True, what="data batch") for batch in data_batches]
    target_dir = guarded_output_dir(output_dir) if output_dir else None
    from tasks import ml

    ensure_ray()
    return ml.predict_batches(model, batches, target_dir, self.report_progress)


@task(soft_time_limit=60, time_limit=120, **DURABLE)
def retrain_models(self):
    """Fan out distributed_training for each model of the configured retrain_models."""
    models = []
    for model in settings().retrain_models:
        child_id = enqueue_once(
            distributed_training, self.request.id, model["name"],
            model_config={**model.get("model_config", {}), "name": model["name"]},
            dataset_path=model["dataset"],
        )
        models.append({"model": model["name"], "task_id": child_id})
    return {"status": "scheduled", "models": models}
