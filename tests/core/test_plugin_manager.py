"""The plugin host: built-ins and entry points loaded once, disable list, failures contained."""

from __future__ import annotations

import ast
import logging
import textwrap
from pathlib import Path

import pytest

from modelyard.core import Architecture, Exporter, hookimpl, hookspecs
from modelyard.core.plugin_manager import DEFAULT_PLUGINS, PluginHost

REPO = Path(__file__).resolve().parents[2]


def _build(num_classes, in_channels=3, pretrained=False, dropout=0.0, **options):  # type: ignore[no-untyped-def]
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


class ArchitecturePlugin:
    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def register_architectures(self, registry) -> None:  # type: ignore[no-untyped-def]
        for name in self.names:
            registry.add(Architecture(name=name, build=_build))


class HalfwayFailingPlugin:
    """Registers one architecture and one exporter, then raises."""

    @hookimpl
    def register_architectures(self, registry) -> None:  # type: ignore[no-untyped-def]
        registry.add(Architecture(name="half_done", build=_build))

    @hookimpl
    def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
        registry.add(Exporter(id="half_fmt", name="x", extension=".x", options_schema={}, export=None, load_runner=None))  # type: ignore[arg-type]
        raise ValueError("boom while registering")


def _install(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``dist`` visible to importlib.metadata with ``modelyard`` entry points and module sources."""
    dist_info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"  # as pip names it: the name part has no '-'
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[modelyard]\n{lines}")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(__import__("sys").modules, module, raising=False)
    monkeypatch.syspath_prepend(str(site))


def test_a_deferred_host_loads_its_plugins_on_the_first_lookup_once() -> None:
    host = PluginHost(disabled=set()).load_on_first_use()
    assert host.plugins == {}  # nothing imported yet
    assert "simple_cnn" in host.architectures
    loaded = dict(host.plugins)
    assert loaded["simple_cnn"].status == "loaded"
    assert host.importers.names() == ["coco", "csv", "imagefolder", "voc", "yolo"] and host.plugins == loaded


def test_a_deferred_host_lists_its_plugins_when_described() -> None:
    host = PluginHost(disabled=set()).load_on_first_use()
    assert {"simple_cnn", "torchvision_models"} <= {p["name"] for p in host.describe()}

def test_builtin_plugins_load_and_register_exactly_once() -> None:
    host = PluginHost(disabled=set()).load_all()
    builtins = [name.rsplit(".", 1)[-1] for name in DEFAULT_PLUGINS]
    assert [p for p in host.plugins if p in builtins] == builtins
    assert all(host.plugins[name].status == "loaded" and host.plugins[name].source == "builtin" for name in builtins)
    assert host.plugins["simple_cnn"].registered == {"tasks": [], "architectures": ["simple_cnn"], "importers": [],
                                                 "exporters": []}
    assert {"simple_cnn", "resnet18", "vit_b_16"} <= set(host.architectures.names())
    # what the built-ins register (third-party plugins installed beside them, e.g. contrib/modelyard-timm, add more)
    assert [n for n in host.importers.names() if host.importers.owner(n) in builtins] == ["coco", "csv", "imagefolder",
                                                                                           "voc", "yolo"]
    assert [n for n in host.exporters.names() if host.exporters.owner(n) in builtins] == ["onnx", "torchscript"]
    counts = (len(host.architectures), len(host.importers), len(host.exporters))
    host.load_all()  # a second call must not register anything twice
    assert (len(host.architectures), len(host.importers), len(host.exporters)) == counts
    assert all(info.error is None for info in host.plugins.values())


def test_register_architectures_hook_entries_are_attributed_to_their_plugin() -> None:
    host = PluginHost(disabled=set())
    host.add_plugin(ArchitecturePlugin("net_a", "net_b"), name="nets")
    assert host.architectures.names() == ["net_a", "net_b"]
    assert host.architectures.owner("net_a") == "nets"
    assert host.plugins["nets"].registered["architectures"] == ["net_a", "net_b"]


def test_register_importers_hook_receives_the_importer_registry(tmp_path: Path) -> None:
    class Importer:
        id, name, description = "marker", "Marker", ""

        def detect(self, root: Path) -> bool:
            return (root / "MARKER").exists()

        def read(self, root: Path):  # type: ignore[no-untyped-def]
            return iter(())

    class ImporterPlugin:
        @hookimpl
        def register_importers(self, registry) -> None:  # type: ignore[no-untyped-def]
            registry.add(Importer())

    host = PluginHost(disabled=set())
    host.add_plugin(ImporterPlugin(), name="marker_plugin")
    assert host.importers.names() == ["marker"]
    assert host.plugins["marker_plugin"].registered["importers"] == ["marker"]
    (tmp_path / "MARKER").touch()
    assert host.importers.detect(tmp_path).id == "marker"


def test_register_exporters_hook_receives_the_exporter_registry() -> None:
    class ExporterPlugin:
        @hookimpl
        def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
            registry.add(Exporter(id="fmt", name="Fmt", extension=".fmt", options_schema={}, export=None, load_runner=None))  # type: ignore[arg-type]

    host = PluginHost(disabled=set())
    host.add_plugin(ExporterPlugin(), name="fmt_plugin")
    assert host.exporters.get("fmt").extension == ".fmt"
    assert host.plugins["fmt_plugin"].registered == {"tasks": [], "architectures": [], "importers": [],
                                                 "exporters": ["fmt"]}


def test_hook_implementation_may_omit_the_registry_argument() -> None:
    called = []

    class NoArgs:
        @hookimpl
        def register_architectures(self) -> None:
            called.append(True)

    host = PluginHost(disabled=set())
    host.add_plugin(NoArgs(), name="no_args")
    assert called == [True] and host.plugins["no_args"].status == "loaded"


def test_duplicate_name_fails_the_later_plugin_with_both_names_and_keeps_the_first() -> None:
    host = PluginHost(disabled=set())
    host.add_plugin(ArchitecturePlugin("dup_net"), name="first")
    host.add_plugin(ArchitecturePlugin("own_net", "dup_net"), name="second")
    assert host.plugins["second"].error == (
        "PluginError: Duplicate architecture 'dup_net': registered by plugin 'first' and again by plugin 'second'"
    )
    assert host.plugins["second"].status == "failed"
    assert host.architectures.names() == ["dup_net"]  # own_net was rolled back with the failed plugin
    assert host.architectures.owner("dup_net") == "first"


def test_third_party_plugin_claiming_a_builtin_name_fails_naming_the_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(
        tmp_path,
        "squatter",
        {"squatter": "squatter_plugin"},
        {
            "squatter_plugin": """
                from modelyard.core import Architecture, hookimpl

                @hookimpl
                def register_architectures(registry):
                    registry.add(Architecture(name="resnet18", build=lambda num_classes, **kw: None))
            """
        },
        monkeypatch,
    )
    host = PluginHost(disabled=set()).load_all()
    info = host.plugins["squatter"]
    assert info.source == "squatter" and info.version == "1.2.3"
    assert info.error == (
        "PluginError: Duplicate architecture 'resnet18': registered by plugin 'torchvision_models' and again by plugin 'squatter'"
    )
    assert host.architectures.owner("resnet18") == "torchvision_models"


def test_plugin_raising_at_import_is_listed_as_failed_and_others_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install(tmp_path, "broken-dist", {"broken": "broken_at_import"}, {"broken_at_import": "raise RuntimeError('boom at import')\n"}, monkeypatch)
    with caplog.at_level(logging.ERROR, logger="modelyard.core.plugin_manager"):
        host = PluginHost(disabled=set()).load_all()
    info = host.plugins["broken"]
    assert (info.status, info.error, info.source) == ("failed", "RuntimeError: boom at import", "broken-dist")
    assert "plugin broken failed to load: boom at import" in caplog.text
    assert host.plugins["simple_cnn"].status == "loaded" and "simple_cnn" in host.architectures


def test_plugin_raising_while_registering_has_its_partial_registrations_rolled_back() -> None:
    host = PluginHost(disabled=set())
    host.add_plugin(ArchitecturePlugin("survivor"), name="good")
    host.add_plugin(HalfwayFailingPlugin(), name="halfway")
    info = host.plugins["halfway"]
    assert (info.status, info.error) == ("failed", "ValueError: boom while registering")
    assert "half_done" not in host.architectures and "half_fmt" not in host.exporters
    assert host.architectures.names() == ["survivor"]
    assert host.pm.get_plugin("halfway") is None  # no longer answers hooks either


def test_entry_point_seen_twice_on_sys_path_is_loaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = {"twice_plugin": "from modelyard.core import Architecture, hookimpl\n\n@hookimpl\ndef register_architectures(registry):\n    registry.add(Architecture(name='twice_net', build=lambda num_classes, **kw: None))\n"}
    _install(tmp_path / "a", "twice", {"twice": "twice_plugin"}, source, monkeypatch)
    _install(tmp_path / "b", "twice", {"twice": "twice_plugin"}, source, monkeypatch)
    host = PluginHost(disabled=set()).load_all()
    assert host.plugins["twice"].status == "loaded"
    assert host.architectures.owner("twice_net") == "twice"


def test_disable_env_var_blocks_plugins_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_DISABLE_PLUGINS", " torchvision_models ,csv_importer,")
    host = PluginHost().load_all()
    assert host.disabled == {"torchvision_models", "csv_importer"}
    assert host.plugins["torchvision_models"].status == "disabled"
    assert host.plugins["torchvision_models"].registered == {}
    assert "resnet18" not in host.architectures and "simple_cnn" in host.architectures
    assert host.importers.names() == ["coco", "imagefolder", "voc", "yolo"]


def test_unknown_hook_name_is_logged_as_a_probable_typo(caplog: pytest.LogCaptureFixture) -> None:
    class Typo:
        @hookimpl
        def register_architecture(self, registry) -> None:  # type: ignore[no-untyped-def]  # missing "s"
            raise AssertionError("never called")

    with caplog.at_level(logging.WARNING, logger="modelyard.core.plugin_manager"):
        PluginHost(disabled=set()).add_plugin(Typo(), name="typo")
    assert "plugin typo implements unknown hook register_architecture" in caplog.text


def test_trace_env_var_logs_every_hook_call(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MODELYARD_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.INFO, logger="modelyard.core.plugin_manager"):
        PluginHost(disabled=set()).add_plugin(ArchitecturePlugin("traced"), name="tracer")
    assert "calling hook register_architectures of plugin tracer" in caplog.text


def _hookspec_names() -> list[str]:
    tree = ast.parse(Path(hookspecs.__file__).read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any(getattr(d, "id", None) == "hookspec" for d in node.decorator_list)
    ]


def test_every_hookspec_is_documented_in_the_plugin_guide() -> None:
    guide = (REPO / "docs" / "plugins.md").read_text()
    names = _hookspec_names()
    assert names == ["register_tasks", "register_architectures", "register_importers", "register_exporters",
                     "register_callbacks", "register_losses", "register_metrics"]
    assert [name for name in names if f"`{name}" not in guide] == []


def test_every_hookspec_has_a_test_named_after_it() -> None:
    test_names = [
        node.name
        for path in (REPO / "tests").rglob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]
    assert [hook for hook in _hookspec_names() if not any(hook in name for name in test_names)] == []


# -- the hook API version a plugin may require (MODELYARD_HOOK_API) ------------------------


class VersionedPlugin(ArchitecturePlugin):
    def __init__(self, hook_api: object, *names: str) -> None:
        super().__init__(*names)
        self.MODELYARD_HOOK_API = hook_api


def test_hook_api_version_is_major_minor_and_public() -> None:
    import modelyard.core
    from modelyard.core import plugin_manager

    assert modelyard.core.HOOK_API_VERSION == plugin_manager.HOOK_API_VERSION
    assert "HOOK_API_VERSION" in modelyard.core.__all__
    major, minor = plugin_manager.parse_hook_api(modelyard.core.HOOK_API_VERSION)
    assert (major, minor) >= (0, 2)  # register_tasks was added in 0.2


@pytest.mark.parametrize("needs", ["0.1", "0.2", "__current__"])
def test_plugin_needing_this_or_an_older_hook_api_loads(needs: str) -> None:
    from modelyard.core import HOOK_API_VERSION

    host = PluginHost(disabled=set())
    host.add_plugin(VersionedPlugin(HOOK_API_VERSION if needs == "__current__" else needs, "versioned_net"), name="versioned")
    assert host.plugins["versioned"].status == "loaded"
    assert host.architectures.owner("versioned_net") == "versioned"


@pytest.mark.parametrize("needs", ["99.0", "0.99", "1.0", "0.10"])  # compared as numbers: 0.10 is newer than 0.3
def test_plugin_needing_a_newer_hook_api_fails_clearly_and_registers_nothing(needs: str) -> None:
    import modelyard
    from modelyard.core import HOOK_API_VERSION

    host = PluginHost(disabled=set())
    host.add_plugin(VersionedPlugin(needs, "future_net"), name="future")
    info = host.plugins["future"]
    assert info.status == "failed" and info.registered == {}
    assert info.error == (
        f"PluginError: needs modelyard hook API {needs} (MODELYARD_HOOK_API), but modelyard {modelyard.__version__} "
        f"provides hook API {HOOK_API_VERSION}: upgrade modelyard or use an older release of the plugin"
    )
    assert "future_net" not in host.architectures
    assert host.pm.get_plugin("future") is None  # never answers a hook


@pytest.mark.parametrize(
    ("declared", "shown"),
    [(0.3, "0.3 (float)"), (1, "1 (int)"), ("0.3.1", "'0.3.1' (str)"), ("v0.3", "'v0.3' (str)"), ("", "'' (str)"),
     (">=0.3", "'>=0.3' (str)"), (" 0.3", "' 0.3' (str)"), ("0.03", "'0.03' (str)"), (("0", "3"), "('0', '3') (tuple)")],
)
def test_malformed_hook_api_declaration_fails_saying_what_is_expected(declared: object, shown: str) -> None:
    from modelyard.core import HOOK_API_VERSION

    host = PluginHost(disabled=set())
    host.add_plugin(VersionedPlugin(declared, "malformed_net"), name="malformed")
    info = host.plugins["malformed"]
    assert info.status == "failed"
    assert info.error == f'PluginError: MODELYARD_HOOK_API must be a string "MAJOR.MINOR" such as "{HOOK_API_VERSION}", got {shown}'
    assert "malformed_net" not in host.architectures


def test_entry_point_module_declaring_a_newer_hook_api_is_listed_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(
        tmp_path,
        "from-the-future",
        {"future": "future_plugin"},
        {
            "future_plugin": """
                from modelyard.core import Architecture, hookimpl

                MODELYARD_HOOK_API = "42.0"

                @hookimpl
                def register_architectures(registry):
                    registry.add(Architecture(name="future_net", build=lambda num_classes, **kw: None))
            """
        },
        monkeypatch,
    )
    host = PluginHost(disabled=set()).load_all()
    row = next(row for row in host.describe() if row["name"] == "future")
    assert (row["status"], row["source"], row["version"], row["registered"]) == ("failed", "from-the-future", "1.2.3", {})
    assert row["error"].startswith("PluginError: needs modelyard hook API 42.0 (MODELYARD_HOOK_API), but modelyard ")
    assert "future_net" not in host.architectures and host.plugins["simple_cnn"].status == "loaded"


# -- entry-point name clashes and load order ---------------------------------------------


def _arch_module(arch: str) -> str:
    return (
        "from modelyard.core import Architecture, hookimpl\n\n"
        "@hookimpl\ndef register_architectures(registry):\n"
        f"    registry.add(Architecture(name={arch!r}, build=lambda num_classes, **kw: None))\n"
    )


def test_two_distributions_with_one_entry_point_name_are_both_listed_and_the_later_fails_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # acme-two is first on sys.path, but distributions of one name load in name order: acme-one holds the name
    _install(tmp_path / "one", "acme-one", {"acme": "acme_one"}, {"acme_one": _arch_module("acme_one_net")}, monkeypatch)
    _install(tmp_path / "two", "acme-two", {"acme": "acme_two"}, {"acme_two": _arch_module("acme_two_net")}, monkeypatch)
    host = PluginHost(disabled=set()).load_all()
    rows = [row for row in host.describe() if row["name"] == "acme"]
    assert [(row["source"], row["status"]) for row in rows] == [("acme-one", "loaded"), ("acme-two", "failed")]
    assert rows[0]["registered"]["architectures"] == ["acme_one_net"] and rows[1]["registered"] == {}
    assert rows[1]["error"] == (
        "PluginError: plugin name 'acme' is provided by distribution 'acme-one' and by distribution 'acme-two'; "
        "'acme-one' came first in the load order, so 'acme-two' is not loaded "
        "(uninstall one of them, or ask its author to rename the entry point)"
    )
    assert "acme_two_net" not in host.architectures
    assert "acme_two" not in __import__("sys").modules  # the loser is never imported
    assert host.plugins["acme"].source == "acme-one"


def test_entry_point_named_like_a_builtin_fails_naming_the_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "impostor", {"simple_cnn": "impostor_plugin"}, {"impostor_plugin": _arch_module("impostor_net")}, monkeypatch)
    host = PluginHost(disabled=set()).load_all()
    rows = [row for row in host.describe() if row["name"] == "simple_cnn"]
    assert [(row["source"], row["status"]) for row in rows] == [("builtin", "loaded"), ("impostor", "failed")]
    assert rows[1]["error"].startswith(
        "PluginError: plugin name 'simple_cnn' is provided by modelyard's built-in plugin and by distribution 'impostor'; "
    )
    assert "impostor_net" not in host.architectures and host.architectures.owner("simple_cnn") == "simple_cnn"


def test_a_disabled_name_disables_every_distribution_providing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path / "one", "acme-one", {"acme": "acme_one"}, {"acme_one": _arch_module("acme_one_net")}, monkeypatch)
    _install(tmp_path / "two", "acme-two", {"acme": "acme_two"}, {"acme_two": _arch_module("acme_two_net")}, monkeypatch)
    host = PluginHost(disabled={"acme"}).load_all()
    rows = [row for row in host.describe() if row["name"] == "acme"]
    assert [(row["source"], row["status"]) for row in rows] == [("acme-one", "disabled"), ("acme-two", "disabled")]
    assert "acme_one_net" not in host.architectures and "acme_two_net" not in host.architectures


def test_builtins_load_first_then_entry_points_sorted_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.path order (z-dist before a-dist) and each distribution's own order disagree with name order on purpose
    _install(tmp_path / "a", "a-dist", {"mid": "mid_plugin"}, {"mid_plugin": _arch_module("mid_net")}, monkeypatch)
    _install(tmp_path / "z", "z-dist", {"zeta": "zeta_plugin", "alpha": "alpha_plugin"},
             {"zeta_plugin": _arch_module("contested_net"), "alpha_plugin": _arch_module("contested_net")}, monkeypatch)
    host = PluginHost(disabled=set()).load_all()
    builtins = [name.rsplit(".", 1)[-1] for name in DEFAULT_PLUGINS]
    order = [row["name"] for row in host.describe()]
    assert order[: len(builtins)] == builtins
    assert [name for name in order[len(builtins):] if name in {"alpha", "mid", "zeta"}] == ["alpha", "mid", "zeta"]
    # the order decides who keeps a contested name: alpha registered first, zeta fails naming it
    assert host.architectures.owner("contested_net") == "alpha"
    assert host.plugins["zeta"].error == (
        "PluginError: Duplicate architecture 'contested_net': registered by plugin 'alpha' and again by plugin 'zeta'"
    )
