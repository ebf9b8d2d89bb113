"""Schema fuzzing: schemathesis against the app's own OpenAPI document, in-process (ASGI).

Every operation of ``/schema/openapi.json`` gets generated requests (valid and
invalid) and every default check runs on each answer: no 5xx, status codes,
content types, headers and bodies as documented, invalid input rejected,
valid input accepted (narrowed only by ``SEMANTIC_RULES`` below). Half of the
examples address a seeded project (a real dataset, experiment and run, put
back after any request that may have changed it) so the fuzzer gets past the
404s; the others use generated ids. A stateful test follows the links
schemathesis infers between operations (create a project, then use its id).

Examples per operation: ``MODELYARD_FUZZ_EXAMPLES`` (15 in CI; ``make fuzz``
runs 300 and a longer stateful phase). Training is not part of this: the
job queue never starts, so started runs stay ``pending``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from modelyard.api.app import create_app
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings
from modelyard.core.jobs.queue import RecoveryReport
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import kill_run_workers, make_run_folder

EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_EXAMPLES", "15"))
STATEFUL_EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_STATEFUL_EXAMPLES", "10"))
DERANDOMIZE = os.environ.get("MODELYARD_FUZZ_RANDOM", "") == ""  # CI: the same examples every run
#: schemathesis reaches the app as http://testserver (its in-process client's host)
FUZZ_HOST = "testserver"
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None if DERANDOMIZE else settings.default.database,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@dataclass
class Seeded:
    """A project with real data whose ids the fuzzer may use; restored to its template before each example."""

    services: Services
    template: Path
    ids: dict[str, str]
    dirty: bool = True

    @property
    def folder(self) -> Path:
        return self.services.workspace.project_dir(self.ids["project_id"])

    def restore(self) -> None:
        """Put the template back, unless only safe requests ran since the last restore."""
        if self.dirty:
            shutil.rmtree(self.folder, ignore_errors=True)
            shutil.copytree(self.template, self.folder)
            self.dirty = False


def _seed(root: Path) -> Seeded:
    """A workspace with one seeded project, and the template copy ``restore`` puts back."""
    (root / "imports").mkdir(parents=True)
    settings_ = Settings(workspace=root / "workspace", import_roots=[root / "imports"], allowed_hosts=[FUZZ_HOST],
                         max_wait_s=0.2)  # ?wait= on queued jobs that never start must not hold the fuzzer
    services = build_services(settings_)
    project_id = create_project_with_dataset(services, per_class=3, size=16, num_classes=2)
    experiment = services.experiments.create(project_id, "fuzzed", config={"model": {"architecture": "simple_cnn"}})
    run_dir = make_run_folder(services.workspace, project_id, status="completed", experiment_id=experiment["id"])
    filename = sorted(p.name for p in services.workspace.images_dir(project_id).iterdir())[0]
    template = root / "template"
    shutil.copytree(services.workspace.project_dir(project_id), template)
    ids = {"project_id": project_id, "exp_id": experiment["id"], "run_id": run_dir.name, "filename": filename,
           "name": "simple_cnn"}
    return Seeded(services, template, ids)


# schemathesis builds its tests from a schema loaded at import time (its lazy fixture loader does not
# support this pytest), so the seeded workspace lives in a temp folder removed when the process exits.
_ROOT = Path(tempfile.mkdtemp(prefix="modelyard-fuzz-"))
atexit.register(shutil.rmtree, _ROOT, True)
SEEDED = _seed(_ROOT)
# No training while fuzzing: worker processes are outside the HTTP contract under test, and schemathesis
# starts the app's lifespan on its own schedule, so the queue must never start rather than be stopped.
SEEDED.services.queue.start = RecoveryReport  # type: ignore[method-assign]
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", create_app(SEEDED.services.settings, SEEDED.services))


@pytest.fixture
def seeded() -> Iterator[Seeded]:
    SEEDED.dirty = True
    SEEDED.restore()
    yield SEEDED
    kill_run_workers(SEEDED.services.workspace.root)  # none should exist; never leave one behind


#: Semantic rules the schema cannot state (they depend on stored data, or tie several fields together;
#: listed in docs/security.md section 8): a 422 naming one of these fields is a correct refusal of
#: schema-valid data. Any other refusal of schema-valid data stays a finding.
SEMANTIC_RULES: dict[str, tuple[str, ...]] = {
    "CreateSplit": ("ratios",),  # the shares sum to at most 1
    "PreviewSplit": ("ratios", "train"),  # ... and train is given whenever val or test is
    "ListImages": ("filter_split",),  # the split index must exist in this dataset
    "ImportLocal": ("path", "format"),  # an existing folder that the chosen importer recognises
    "ImportUpload": ("file", "format"),  # a readable ZIP with images that the chosen importer recognises
    "CreateExperiment": ("config",),  # registered architecture, existing split, allowed augmentations, devices
    "UpdateExperiment": ("config",),
}


def _operation_id(case: schemathesis.Case) -> str:
    return str(case.operation.definition.raw.get("operationId", ""))


def _refused_field(response: Any) -> str:
    try:
        details = response.json()["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return ""
    return str(details.get("field") or "") if isinstance(details, dict) else ""


def positive_data_acceptance_but_semantic_rules(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """The default ``positive_data_acceptance`` check, except for a 422 on a rule in ``SEMANTIC_RULES``."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        rules = SEMANTIC_RULES.get(_operation_id(case), ())
        field = _refused_field(response)
        if response.status_code == 422 and any(field == rule or field.startswith(rule + ".") for rule in rules):
            return None
        raise


CHECKS = {"excluded_checks": [positive_data_acceptance], "additional_checks": [positive_data_acceptance_but_semantic_rules]}


@schema.parametrize()
@schema.given(use_seeded=st.booleans())
@FUZZ_SETTINGS
def test_every_operation_matches_its_openapi_document(case: schemathesis.Case, use_seeded: bool, seeded: Seeded) -> None:
    seeded.restore()  # every example starts from the same seeded project
    if use_seeded and case.path_parameters:
        for name in case.path_parameters:
            if name in seeded.ids:
                case.path_parameters[name] = seeded.ids[name]
    seeded.dirty = seeded.dirty or case.method.upper() not in ("GET", "HEAD", "OPTIONS")
    case.call_and_validate(**CHECKS)


def test_stateful_sequences_follow_inferred_links(seeded: Seeded) -> None:
    seeded.dirty = True  # the sequences may change anything
    class Machine(schema.as_state_machine()):  # type: ignore[misc,valid-type]
        def validate_response(self, response: Any, case: schemathesis.Case, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            case.validate_response(response, **CHECKS, transport_kwargs=kwargs or None,
                                   recorder=getattr(self, "recorder", None))

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            derandomize=DERANDOMIZE,
            database=None if DERANDOMIZE else settings.default.database,
            suppress_health_check=list(HealthCheck),
        )
    )
