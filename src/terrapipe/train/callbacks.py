"""The in-training downstream evaluation: kNN accuracy of the online encoder on one classification task every
N steps (OlmoEarth's downstream_evaluator callback, reference/olmoearth-behaviour.md section 7).

The reference set is the task's train partition and the queries its valid partition: the test partition stays
for evaluate@<experiment>, so watching this curve during training never selects on test data. The encoder is
evaluated exactly as evaluate@<experiment> does it (evals.embeddings.extract: unmasked, eval mode, the
checkpoint's normalization), then put back in training mode; no random stream is consumed, so a run with the
callback trains the same weights as one without.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("terrapipe")

REFERENCE, QUERY = "train", "valid"


def metric_name(task: str) -> str:
    """The curve's column: what it computes, on which partition."""
    return f"knn_{task}_{QUERY}_accuracy"


def knn_callback(config, extra_state: dict, task_root: Path) -> Callable | None:
    """A function (encoder, step) -> {metric_name: accuracy} for the steps ``config.downstream`` names, else
    None; None when the callback is off (``downstream.every`` 0).

    Args:
        config: the resolved ExperimentConfig (its ``downstream`` section and modalities).
        extra_state: the checkpoint's band order and normalization statistics (what extraction feeds on).
        task_root: the folder of the task in its benchmark's layout (fetch_tasks@<task>).
    """
    settings = config.downstream
    if settings.every == 0:
        return None
    from terrapipe.data.tasks import read_task
    from terrapipe.errors import InputDataError
    from terrapipe.evals.embeddings import EncoderHandle, extract
    from terrapipe.evals.knn import knn_classify
    from terrapipe.evals.metrics import classification_report

    if not Path(task_root).is_dir():
        raise InputDataError(task_root, f"missing: the pretraining callback (downstream.task: {settings.task}) "
                             "evaluates on it", f"Run `dvc repro fetch_tasks@{settings.task}` first, or set "
                             "downstream.every: 0 in the experiment")
    task = read_task(settings.task, task_root)
    reference, query = task.subset(REFERENCE), task.subset(QUERY)
    name = metric_name(settings.task)

    def evaluate(encoder, step: int) -> dict | None:
        if step % settings.every and step != config.train.steps:
            return None
        handle = EncoderHandle(encoder, config, extra_state["band_order"], extra_state["normalization"],
                               f"training step {step}", str(next(encoder.parameters()).device))
        try:
            train_emb = extract(handle, reference, "classification")
            query_emb = extract(handle, query, "classification")
        finally:
            encoder.train()
        keep = reference.labels >= 0
        pred = knn_classify(train_emb[keep], reference.labels[keep], query_emb, len(task.class_names),
                            k=settings.k, temperature=settings.temperature)
        accuracy = classification_report(pred, query.labels, len(task.class_names), -1)["accuracy"]
        log.info("step %d: %s %.3f", step, name, accuracy)
        return {"step": step, name: float(accuracy)}

    return evaluate

