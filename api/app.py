"""``create_app(settings)``: the only way to build the Litestar application."""

from __future__ import annotations

import logging

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

import modelyard
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings

from .allow import complete_allow_header
from .auth import openapi_security_options, token_auth_middlewares
from .datasets import DatasetController
from .deps import provide_services
from .docs_pages import docs_assets_handler, docs_render_plugins, docs_security_headers
from .errors import EXCEPTION_HANDLERS
from .evaluations import EvaluationController
from .experiments import ExperimentController
from .exports import ExportController
from .hostcheck import HostPolicy, host_check_middleware
from .json_body import json_body_middleware
from .openapi import RecordSchemaPlugin, StrictStructSchemaPlugin
from .plugins import DatasetFormatController, ExportFormatController, ModelController, PluginController
from .predict import PredictController, prediction_lifespan
from .projects import ProjectController
from .runs import RunController, job_queue_lifespan
from .splits import SplitController
from .system import SystemController
from .web_ui import ui_security_headers, web_ui_router

log = logging.getLogger("modelyard.api")

CONTROLLERS = [ProjectController, SystemController, RunController, PluginController, ExportFormatController, DatasetFormatController, ModelController, DatasetController, SplitController, EvaluationController, ExportController, ExperimentController, PredictController]


def create_app(settings: Settings, services: Services | None = None) -> Litestar:
    """Build the app for ``settings`` (tests pass a temp workspace)."""
    services = services or build_services(settings)
    services.plugins.ensure_loaded()  # a broken plugin is reported at start, and the first request is not slow
    policy = HostPolicy(settings.host, settings.allowed_hosts)
    app = Litestar(
        route_handlers=[*CONTROLLERS, docs_assets_handler(), web_ui_router()],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        # recover jobs at start, run the job queue while serving; the loaded models' threads stop with the server
        lifespan=[job_queue_lifespan, prediction_lifespan],
        middleware=[host_check_middleware(policy), *token_auth_middlewares(settings.api_token), json_body_middleware],
        request_max_body_size=settings.max_request_bytes,
        # additionalProperties: false where unknown fields are refused; every field required in a record
        plugins=[StrictStructSchemaPlugin(task_ids=services.plugins.tasks.names), RecordSchemaPlugin()],
        before_send=[complete_allow_header, docs_security_headers, ui_security_headers],  # full Allow on OPTIONS; CSP on docs and UI
        openapi_config=OpenAPIConfig(
            title="modelyard",
            version=modelyard.__version__,
            description="Train, evaluate and export image models on your own hardware.",
            path="/schema",
            render_plugins=docs_render_plugins(),  # assets served from the package, not a CDN
            **openapi_security_options(settings.api_token),
        ),
        debug=False,
    )
    app.state.services = services
    app.state.settings = settings
    return app
