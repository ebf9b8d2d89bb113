"""Evaluation runs through Lightning on the devices it names: CPU DDP gives exactly the single-process results.

Two ranks each take every other image of the subset (one rank gets a padded,
masked extra item when the count is odd); rank 0 gathers the outputs once and
puts them back in order. The evaluation job runs in a real worker process, as
the server's queue starts it, and Lightning starts the second rank by
re-running that worker's command line.
"""

from __future__ import annotations

import os
import subprocess

import msgspec
import numpy as np

from modelyard.core.evaluation.results import RESULTS_FILE, ResultsTable
from modelyard.core.jobs.folder import Claimant
from modelyard.core.jobs.foreground import evaluate_or_follow
from modelyard.core.jobs.kinds import EVALUATE
from modelyard.core.jobs.spawn import cold_command
from modelyard.core.jsonio import read_json
from modelyard.core.services import Services
from tests.conftest import TrainedRun


def _results(services: Services, run: TrainedRun, eval_id: str) -> ResultsTable:
    return ResultsTable.load(services.workspace.evaluations_dir(run.project_id) / eval_id / RESULTS_FILE)


def test_cpu_ddp_evaluation_gives_exactly_the_single_process_results(services: Services, trained_run: TrainedRun) -> None:
    request = {"experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "split_subset": ["train", "test"],
               "batch_size": 4}
    dataset = read_json(services.workspace.dataset_json(trained_run.project_id))
    subset_images = [i for i in dataset["images"] if i["split"][0] in ("train", "test")]
    assert len(subset_images) % 2 == 1 or len(subset_images) > 8  # an uneven shard or several batches per rank

    single = services.evaluations.create(trained_run.project_id, **request)
    evaluate_or_follow(services.workspace, services.workspace.evaluations_dir(trained_run.project_id) / single.id,
                       services.plugins)

    ddp = services.evaluations.create(trained_run.project_id, num_processes=2, **request)
    folder = services.workspace.evaluations_dir(trained_run.project_id) / ddp.id
    EVALUATE.job(services.workspace, folder).claim(Claimant.this_process("server"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(cold_command(EVALUATE, folder, services.workspace.root), cwd=folder, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in output and "GLOBAL_RANK: 1, MEMBER: 2/2" in output, output[-3000:]

    one = services.evaluations.get(trained_run.project_id, single.id)
    two = services.evaluations.get(trained_run.project_id, ddp.id)
    assert one.status == two.status == "completed", (one.error, two.error)
    assert two.num_images == one.num_images == len(subset_images)
    assert msgspec.to_builtins(two.metrics) == msgspec.to_builtins(one.metrics)
    a, b = _results(services, trained_run, single.id), _results(services, trained_run, ddp.id)
    for column in ("filenames", "subsets", "ground_truth", "predicted", "confidence", "loss", "topk_ids", "topk_probs"):
        assert np.array_equal(getattr(a, column), getattr(b, column)), column
