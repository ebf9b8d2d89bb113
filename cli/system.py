"""``modelyard plugins`` and ``modelyard devices``: what this installation can do, from a shell."""

from __future__ import annotations

from typing import Any

import click

from .common import domain_errors, emit, json_option, table


@click.command()
@json_option
@domain_errors
def plugins(as_json: bool) -> None:
    """List loaded plugins and what they registered.

    Architectures, dataset importers and export formats.
    Same data as GET /api/system/plugins. MODELYARD_DISABLE_PLUGINS=name,...
    blocks plugins by name. See docs/plugins.md to write one.
    """
    from modelyard.core.plugin_manager import default_plugin_host

    host = default_plugin_host()
    data = {
        "plugins": host.describe(),
        "architectures": host.architectures.names(),
        "importers": host.importers.names(),
        "export_formats": host.exporters.names(),
    }

    def human(d: dict[str, Any]) -> None:
        rows = []
        for info in d["plugins"]:
            registered = info.get("registered") or {}
            what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in registered.items() if names)
            rows.append((info["name"], info.get("version") or "", info["status"], what or info.get("error") or ""))
        click.echo(table(rows, ("PLUGIN", "VERSION", "STATUS", "REGISTERED")))

    emit(data, as_json, human)


@click.command()
@json_option
@domain_errors
def devices(as_json: bool) -> None:
    """List training devices (the CPU and NVIDIA GPUs).

    Their ids are what hardware.devices in a config names.
    """
    from modelyard.core.devices import list_devices

    data = list_devices()

    def human(d: dict[str, Any]) -> None:
        rows = [(dev["id"], dev["name"], dev.get("memory_total_mb") or "", dev.get("memory_free_mb") or "")
                for dev in d["devices"]]
        click.echo(table(rows, ("ID", "NAME", "MEMORY MB", "FREE MB")))
        click.echo(f"CUDA: {'available, ' + str(d.get('cuda_version')) if d['cuda_available'] else 'not available'}; "
                   f"default selection: {', '.join(d['default_selected'])}")

    emit(data, as_json, human)
