"""``create_app(settings)``: the only way to build the Litestar application."""

from __future__ import annotations

import logging

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RapidocRenderPlugin, SwaggerRenderPlugin

import modelyard
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings

from .deps import provide_services
from .errors import EXCEPTION_HANDLERS
from .hostcheck import HostPolicy, host_check_middleware
from .projects import ProjectController
from .system import SystemController

log = logging.getLogger("modelyard.api")

CONTROLLERS = [ProjectController, SystemController]


def create_app(settings: Settings, services: Services | None = None) -> Litestar:
    """Build the app for ``settings`` (tests pass a temp workspace)."""
    services = services or build_services(settings)
    policy = HostPolicy(settings.host, settings.allowed_hosts)
    app = Litestar(
        route_handlers=CONTROLLERS,
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[host_check_middleware(policy)],
        request_max_body_size=settings.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="modelyard",
            version=modelyard.__version__,
            description="Train, evaluate and export image models on your own hardware.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(), RapidocRenderPlugin()],
        ),
        debug=False,
    )
    app.state.services = services
    app.state.settings = settings
    return app
