"""The prediction service on a real tiny trained run: checkpoint and ONNX export, the cache, hostile images."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from modelyard.core.errors import ConflictError, ModelNotFoundError, PayloadTooLargeError, ValidationError
from modelyard.core.prediction.service import PredictOptions


def dataset_files(services, run, count: int = 6) -> list[tuple[str, bytes]]:
    images_dir = services.workspace.images_dir(run.project_id)
    names = sorted(p.name for p in images_dir.iterdir())[:count]
    return [(name, (images_dir / name).read_bytes()) for name in names]


def test_a_checkpoint_answers_with_sorted_top_k_probabilities(services, trained_run) -> None:
    model = services.predictions.load(trained_run.project_id, run_id=trained_run.run_id, checkpoint="best")
    assert model["id"].startswith("model-") and model["runtime"] == "pytorch" and model["is_default"]
    assert model["source"]["run_id"] == trained_run.run_id and model["task"] == "classification"
    answer = services.predictions.predict(trained_run.project_id, None, dataset_files(services, trained_run),
                                          PredictOptions(top_k=2))
    assert len(answer["results"]) == 6
    for result in answer["results"]:
        confidences = [p["confidence"] for p in result["predictions"]]
        assert len(confidences) == 2 and confidences == sorted(confidences, reverse=True)
        assert {p["class_name"] for p in result["predictions"]} <= set(model["classes"])


def test_checkpoint_confidences_equal_the_evaluation_path(services, trained_run) -> None:
    from modelyard.core.evaluation.worker import EvaluationPlan, predict_outputs
    from modelyard.core.training.checkpoints import load_trained_model
    from modelyard.core.training.task_runtime import runtime_of

    files = dataset_files(services, trained_run, 8)
    trained = load_trained_model(services.workspace, trained_run.project_id, trained_run.run_id, "best",
                                 plugins=services.plugins)
    runtime = runtime_of(services.plugins.tasks.get("classification"))
    items = [(name, "test", 0) for name, _ in files]
    expected = predict_outputs(trained, runtime, services.workspace.images_dir(trained_run.project_id), items,
                               EvaluationPlan("cpu", 1, 1), 4, None)
    services.predictions.load(trained_run.project_id, run_id=trained_run.run_id)
    answer = services.predictions.predict(trained_run.project_id, None, files, PredictOptions(top_k=3))
    for (probabilities, _), result in zip(expected, answer["results"], strict=True):
        for p in result["predictions"]:
            assert abs(p["confidence"] - float(probabilities[p["class_id"]])) < 1e-5


def test_an_onnx_export_agrees_with_its_checkpoint_on_top1(services, trained_run) -> None:
    from modelyard.core.jobs.foreground import export_or_follow

    record = services.exports.create(trained_run.project_id, experiment_id=trained_run.experiment_id,
                                     run_id=trained_run.run_id, checkpoint="best", format="onnx")
    export_or_follow(services.workspace, services.workspace.exports_dir(trained_run.project_id) / record.id,
                     services.plugins)
    files = dataset_files(services, trained_run, 10)
    onnx = services.predictions.load(trained_run.project_id, export_id=record.id)
    torch_model = services.predictions.load(trained_run.project_id, run_id=trained_run.run_id)
    assert onnx["runtime"] == "onnxruntime"
    a = services.predictions.predict(trained_run.project_id, onnx["id"], files, PredictOptions(top_k=1))
    b = services.predictions.predict(trained_run.project_id, torch_model["id"], files, PredictOptions(top_k=1))
    assert [r["predictions"][0]["class_id"] for r in a["results"]] == [r["predictions"][0]["class_id"] for r in b["results"]]
    for x, y in zip(a["results"], b["results"], strict=True):
        assert abs(x["predictions"][0]["confidence"] - y["predictions"][0]["confidence"]) < 1e-4


def png(size: tuple[int, int] = (20, 20), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"not an image at all", "not a recognised image"),
    (png((64, 64))[:-30], "corrupt or truncated"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a recognised image"),
])
def test_an_unusable_image_gets_an_error_in_its_place_and_the_others_are_answered(services, trained_run, data,
                                                                                   reason) -> None:
    services.predictions.load(trained_run.project_id, run_id=trained_run.run_id)
    answer = services.predictions.predict(trained_run.project_id, None, [("good.png", png()), ("bad.png", data)],
                                          PredictOptions())
    good, bad = answer["results"]
    assert good["predictions"] and "error" not in good
    assert bad["filename"] == "bad.png" and bad["error"]["code"] == "INVALID_IMAGE" and reason in bad["error"]["message"]


def test_a_decompression_bomb_is_refused_before_decoding(services, trained_run) -> None:
    services.settings.max_image_pixels = 100 * 100
    services.predictions.load(trained_run.project_id, run_id=trained_run.run_id)
    answer = services.predictions.predict(trained_run.project_id, None, [("big.png", png((200, 200), "L"))],
                                          PredictOptions())
    assert "decompression bomb" in answer["results"][0]["error"]["message"]


def test_grayscale_palette_and_alpha_images_are_converted_like_training_images(services, trained_run) -> None:
    services.predictions.load(trained_run.project_id, run_id=trained_run.run_id)
    files = [(f"{mode}.png", png((30, 10), mode)) for mode in ("L", "P", "RGBA", "LA", "1", "I;16")]
    answer = services.predictions.predict(trained_run.project_id, None, files, PredictOptions())
    assert all("predictions" in r for r in answer["results"]), answer


def test_request_limits_and_options_are_validated(services, trained_run) -> None:
    services.predictions.load(trained_run.project_id, run_id=trained_run.run_id)
    services.settings.predict_max_files = 2
    with pytest.raises(PayloadTooLargeError):
        services.predictions.predict(trained_run.project_id, None, [("a.png", png())] * 3, PredictOptions())
    with pytest.raises(ValidationError):
        services.predictions.predict(trained_run.project_id, None, [], PredictOptions())
    for bad in ({"top_k": 0}, {"top_k": True}, {"score_threshold": 1.5}, {"score_threshold": float("nan")}):
        with pytest.raises(ValidationError):
            PredictOptions(**bad)


def test_models_are_listed_unloaded_and_the_default_follows(services, trained_run) -> None:
    project = trained_run.project_id
    first = services.predictions.load(project, run_id=trained_run.run_id, checkpoint="best")
    second = services.predictions.load(project, run_id=trained_run.run_id, checkpoint="last")
    assert [m["id"] for m in services.predictions.list(project)] == [second["id"], first["id"]]
    assert services.predictions.set_default(project, second["id"])["is_default"]
    services.predictions.unload(project, second["id"])
    with pytest.raises(ConflictError):
        services.predictions.predict(project, None, [("a.png", png())], PredictOptions())
    with pytest.raises(ModelNotFoundError):
        services.predictions.get(project, second["id"])
    with pytest.raises(ModelNotFoundError):
        services.predictions.predict(project, "model-00000000", [("a.png", png())], PredictOptions())


def test_the_least_recently_used_model_is_evicted_when_the_cache_is_full(services, trained_run) -> None:
    project = trained_run.project_id
    services.predictions.cache.max_models = 2
    a = services.predictions.load(project, run_id=trained_run.run_id)
    b = services.predictions.load(project, run_id=trained_run.run_id, checkpoint="last")
    services.predictions.predict(project, a["id"], [("x.png", png())], PredictOptions())  # a is now the most recent
    c = services.predictions.load(project, run_id=trained_run.run_id)
    assert {m["id"] for m in services.predictions.list(project)} == {a["id"], c["id"]}
    with pytest.raises(ModelNotFoundError):
        services.predictions.get(project, b["id"])


def test_a_model_larger_than_the_cache_budget_is_refused(services, trained_run) -> None:
    services.predictions.cache.max_bytes = 10
    with pytest.raises(ConflictError, match="cache"):
        services.predictions.load(trained_run.project_id, run_id=trained_run.run_id)
    assert services.predictions.list(trained_run.project_id) == []


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(services, trained_run) -> None:
    project = trained_run.project_id
    model = services.predictions.load(project, run_id=trained_run.run_id)
    services.predictions.cache.get(project, model["id"]).batcher.wait_s = 0.05
    files = dataset_files(services, trained_run, 12)
    single = {name: services.predictions.predict(project, None, [(name, data)], PredictOptions(top_k=3))["results"][0]
              for name, data in files}
    batches_before = services.predictions.cache.get(project, model["id"]).batcher.batches_run
    answers: dict[str, dict] = {}
    barrier = threading.Barrier(len(files))

    def ask(name: str, data: bytes) -> None:
        barrier.wait()
        answers[name] = services.predictions.predict(project, None, [(name, data)], PredictOptions(top_k=3))["results"][0]

    threads = [threading.Thread(target=ask, args=file) for file in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, result in answers.items():
        assert [p["class_id"] for p in result["predictions"]] == [p["class_id"] for p in single[name]["predictions"]]
        assert np.allclose([p["confidence"] for p in result["predictions"]],
                           [p["confidence"] for p in single[name]["predictions"]], atol=1e-5)
    batches = services.predictions.cache.get(project, model["id"]).batcher.batches_run - batches_before
    assert batches < len(files)  # some requests shared a forward pass
