"""Dependency providers shared by the controllers."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import NamedDependency

from modelyard.core.services import Services


def provide_services(state: State) -> Services:
    return state.services  # type: ignore[no-any-return]


#: Handlers declare ``services: ServicesDep`` so the dependency is explicit (Litestar 3 style).
ServicesDep = NamedDependency[Services]
