"""``Allow`` on automatic OPTIONS answers names every method of the path.

Litestar builds the OPTIONS handler of a path when the path's first handler
is registered and never refreshes it, so ``OPTIONS /api/projects`` answered
``Allow: OPTIONS, POST`` although GET works too (found by schema fuzzing).
This ``before_send`` hook rewrites the header from the app's final routes.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope


def allowed_methods(app: Litestar) -> dict[str, str]:
    """``path template -> "GET, OPTIONS, POST"`` for every HTTP route of ``app``."""
    return {
        route.path_format: ", ".join(sorted(route.methods))
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }


async def complete_allow_header(message: Message, scope: Scope) -> None:
    """``before_send`` hook: on an OPTIONS answer, replace ``Allow`` with the path's full method list."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    app = Litestar.from_scope(scope)
    table = app.state.get("allowed_methods")
    if table is None:
        table = app.state["allowed_methods"] = allowed_methods(app)
    methods = table.get(scope.get("path_template", ""))  # type: ignore[call-overload]
    if methods is not None:
        MutableScopeHeaders.from_message(message)["Allow"] = methods
