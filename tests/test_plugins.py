"""Hook-level tests of the plugin system: every hookspec, the allow-list, and failing plugins.

Test plugins are registered on the shared manager (and removed afterwards) or installed as a
real distribution (a ``*.dist-info`` folder with an ``entry_points.txt`` on ``sys.path``), so
entry-point discovery, ``CXR_PLUGINS`` and version reporting run exactly as for a pip install.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from importlib.metadata import version
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cxr_infer import hookspecs as infer_hookspecs
from cxr_infer.cli import main as infer_main
from cxr_infer.hookspecs import hookimpl
from cxr_infer.plugins import (
    ALLOW_ENV,
    PluginError,
    describe_plugins,
    get_plugin_manager,
    process_result,
    reset_plugin_manager,
)
from cxr_infer.readers import ReadError, available_readers, read_image
from cxr_infer.writers import available_writers
from cxr_train import hookspecs as train_hookspecs
from cxr_train.augment import available_augmentations, build_pipeline
from cxr_train.cli import main as train_main
from cxr_train.models import available_models, get_model_spec
from cxr_train.plugins import get_plugin_manager as get_train_plugin_manager
from tests.data_root import DATA

HOOKSPEC_MODULES = (infer_hookspecs, train_hookspecs)
EXAMPLE_PLUGINS = {"clahe": "cxr-clahe", "densenet": "cxr-densenet", "fhir": "cxr-fhir"}  # entry point: package


def hookspec_names() -> list[str]:
    """Every hook specification of both packages (pluggy marks each with ``cxr_spec``)."""
    return sorted(
        {name for module in HOOKSPEC_MODULES for name, obj in vars(module).items() if hasattr(obj, "cxr_spec")}
    )


@pytest.fixture
def plugin() -> Iterator[Callable[[str, object], None]]:
    """Register objects carrying hookimpls on the shared manager for one test, then remove them."""
    pm = get_train_plugin_manager()
    names: list[str] = []

    def register(name: str, obj: object) -> None:
        pm.register(obj, name=name)
        names.append(name)

    yield register
    for name in names:
        pm.unregister(name=name)


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Install a one-module plugin distribution (entry point ``name`` in group ``cxr``) on ``sys.path``."""
    modules: list[str] = []

    def make(name: str, source: str) -> None:
        module = f"cxr_testplugin_{name}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        dist = tmp_path / f"{module}-1.2.3.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cxr-testplugin-{name}\nVersion: 1.2.3\n")
        (dist / "entry_points.txt").write_text(f"[cxr]\n{name} = {module}\n")
        modules.append(module)

    monkeypatch.syspath_prepend(str(tmp_path))
    reset_plugin_manager()
    yield make
    reset_plugin_manager()
    for module in modules:
        sys.modules.pop(module, None)


WRITER_PLUGIN = """
    from cxr_infer.hookspecs import hookimpl

    @hookimpl
    def register_writers(register):
        register("null", lambda path, columns: None, extension=".null")
"""


def test_every_hookspec_has_a_test() -> None:
    names = hookspec_names()
    assert {"register_models", "register_augmentations", "register_readers", "register_writers", "process_result"} <= set(names)
    tests = {name for name, obj in globals().items() if name.startswith("test_hook_") and inspect.isfunction(obj)}
    missing = [name for name in names if not any(test.startswith(f"test_hook_{name}") for test in tests)]
    assert not missing, f"hookspecs without a test_hook_<name> test: {missing}"


def test_hookspecs_are_docstring_only() -> None:
    for module in HOOKSPEC_MODULES:
        for name in hookspec_names():
            spec = getattr(module, name, None)
            if spec is not None:
                body = inspect.getsource(spec).split('"""')[-1].strip()
                assert spec.__doc__ and body == "", f"{module.__name__}.{name} must be docstring-only"


class TinyNet(nn.Module):
    """A two-layer test network: conv block (the Grad-CAM target) then a GAP-linear head."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x).mean(dim=(2, 3)))


class ModelPlugin:
    @hookimpl
    def register_models(self, register):
        register("tinynet", lambda num_classes, pretrained: TinyNet(num_classes), target_layer="block", input_size=32)


def test_hook_register_models(plugin) -> None:
    plugin("tiny-models", ModelPlugin())
    spec = get_model_spec("tinynet")
    assert (spec.plugin, spec.target_layer, spec.input_size) == ("tiny-models", "block", 32)
    assert spec.factory(3, False)(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    assert {"simplecnn", "resnet50"} <= set(available_models())  # built-ins stay


class AugmentationPlugin:
    @hookimpl
    def register_augmentations(self, register):
        register("invert", lambda p=1.0: lambda batch, generator: 1.0 - batch if p > 0 else batch, {"p": 1.0})


def test_hook_register_augmentations(plugin) -> None:
    plugin("tiny-augment", AugmentationPlugin())
    assert available_augmentations()["invert"].plugin == "tiny-augment"
    batch = torch.rand(2, 1, 8, 8)
    assert torch.equal(build_pipeline(["invert"])(batch, torch.Generator()), 1.0 - batch)
    assert build_pipeline(["invert:p=0"])(batch, torch.Generator()) is batch  # parameters reach the factory


class NpyReaderPlugin:
    """Reads ``.npy`` by extension, and files starting with the NumPy magic whatever their name."""

    @hookimpl
    def register_readers(self, register):
        register("npy", np.load, extensions=(".npy",), sniff=lambda head: head.startswith(b"\x93NUMPY"))


def test_hook_register_readers(plugin, tmp_path: Path) -> None:
    plugin("npy-reader", NpyReaderPlugin())
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    np.save(tmp_path / "a.npy", image)
    (tmp_path / "a.npy").rename(tmp_path / "disguised.png")
    assert available_readers()["npy"].plugin == "npy-reader"
    assert np.array_equal(read_image(tmp_path / "disguised.png"), image)  # sniffed, not by extension


class PickyNpyReaderPlugin:
    """A reader that fails on one file, as a plugin with a bug or a strict parser would."""

    @hookimpl
    def register_readers(self, register):
        def read(path: Path) -> np.ndarray:
            if path.stem == "bad":
                raise ValueError("corrupt array header")
            return np.load(path)

        register("npy", read, extensions=(".npy",))


@pytest.mark.data
def test_hook_register_readers_failure_is_that_files_error_row(plugin, tmp_path: Path, tiny_model_path: Path) -> None:
    plugin("npy-reader", PickyNpyReaderPlugin())
    image = read_image(sorted((DATA / "cxr3-internal" / "test" / "covid").glob("*.jpg"))[0])
    (tmp_path / "in").mkdir()
    for name in ("a", "bad", "c"):
        np.save(tmp_path / "in" / f"{name}.npy", image)
    out = tmp_path / "out"
    result = CliRunner().invoke(infer_main, [str(tmp_path / "in"), "--model", str(tiny_model_path), "--out", str(out), "--format", "jsonl", "-q"])
    assert result.exit_code == 1, result.output  # some inputs failed; the run went on
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [Path(row["path"]).name for row in rows] == ["a.npy", "bad.npy", "c.npy"]
    assert rows[0]["label"] and rows[0]["error"] == "" and rows[2]["error"] == ""
    assert "corrupt array header" in rows[1]["error"] and "plugin 'npy-reader'" in rows[1]["error"]


class BrokenSniffPlugin:
    @hookimpl
    def register_readers(self, register):
        register("broken-sniff", np.load, sniff=lambda head: head[1000])  # IndexError on every file


@pytest.mark.data
def test_hook_register_readers_failing_sniff_is_named(plugin) -> None:
    plugin("sniffer", BrokenSniffPlugin())
    path = sorted((DATA / "cxr3-internal" / "test" / "covid").glob("*.jpg"))[0]
    with pytest.raises(ReadError, match="IndexError while sniffing: .* \\(reader 'broken-sniff' of plugin 'sniffer'\\)"):
        read_image(path)


class TsvWriter:
    def __init__(self, path: Path, columns):
        self.handle, self.columns = open(path, "w"), list(columns)

    def write(self, row: dict) -> None:
        self.handle.write("\t".join(str(row.get(column, "")) for column in self.columns) + "\n")

    def close(self) -> None:
        self.handle.close()


class TsvWriterPlugin:
    @hookimpl
    def register_writers(self, register):
        register("tsv", TsvWriter, extension=".tsv")


def test_hook_register_writers(plugin, tmp_path: Path) -> None:
    plugin("tsv-writer", TsvWriterPlugin())
    writers = available_writers()
    assert {"csv", "jsonl", "tsv"} <= set(writers) and writers["tsv"].plugin == "tsv-writer"
    writer = writers["tsv"].factory(tmp_path / "out.tsv", ["path", "error"])
    writer.write({"path": "a.png", "error": ""})
    writer.close()
    assert (tmp_path / "out.tsv").read_text() == "a.png\t\n"


class FlagPlugin:
    @hookimpl
    def process_result(self, result):
        result["flagged"] = result.get("path", "").endswith("b.png")


class FailOnBPlugin:
    @hookimpl
    def process_result(self, result):
        if result["path"] == "b.png":
            raise ValueError("cannot route b.png")


def test_hook_process_result(plugin) -> None:
    plugin("flag", FlagPlugin())
    rows = [{"path": "a.png"}, {"path": "b.png"}]
    for row in rows:
        process_result(get_plugin_manager(), row)
    assert [row["flagged"] for row in rows] == [False, True]


def test_hook_process_result_failure_names_the_plugin_for_that_row_only(plugin) -> None:
    plugin("router", FailOnBPlugin())
    process_result(get_plugin_manager(), {"path": "a.png"})
    with pytest.raises(PluginError, match="'router' failed in hook process_result: ValueError: cannot route b.png") as caught:
        process_result(get_plugin_manager(), {"path": "b.png"})
    assert caught.value.plugin == "router"


class RaisingModelPlugin:
    @hookimpl
    def register_models(self, register):
        raise RuntimeError("weights missing")


class MisregisteringWriterPlugin:
    @hookimpl
    def register_writers(self, register):
        register("xml")  # no writer factory


def test_a_plugin_raising_in_a_registration_hook_is_named(plugin) -> None:
    plugin("broken-models", RaisingModelPlugin())
    with pytest.raises(PluginError, match="'broken-models' failed in hook register_models: RuntimeError: weights missing"):
        available_models()


def test_a_registration_with_wrong_arguments_is_named(plugin) -> None:
    plugin("bad-writer", MisregisteringWriterPlugin())
    with pytest.raises(PluginError, match="'bad-writer' failed in hook register_writers"):
        available_writers()


class RaisingReaderPlugin:
    @hookimpl
    def register_readers(self, register):
        raise OSError("codec library missing")


@pytest.mark.data
def test_cxr_train_names_a_plugin_raising_in_registration(plugin, tmp_path: Path) -> None:
    plugin("broken-models", RaisingModelPlugin())
    args = ["fit", "--data", str(DATA / "cxr3-internal"), "--model", "simplecnn", "--epochs", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # an error line, not a traceback
    assert "Error: plugin 'broken-models' failed in hook register_models: RuntimeError: weights missing" in result.output


@pytest.mark.data
def test_cxr_infer_names_a_plugin_raising_in_registration_and_exits_2(plugin, tiny_model_path: Path, tmp_path: Path) -> None:
    plugin("broken-reader", RaisingReaderPlugin())
    result = CliRunner().invoke(infer_main, [str(DATA / "dicom"), "--model", str(tiny_model_path), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "plugin 'broken-reader' failed in hook register_readers: OSError: codec library missing" in result.output


def test_installed_plugin_is_listed_with_its_version(install, monkeypatch: pytest.MonkeyPatch) -> None:
    install("nullwriter", WRITER_PLUGIN)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    rows = {row["name"]: row for row in describe_plugins(get_plugin_manager())}
    assert rows["nullwriter"] == {
        "name": "nullwriter",
        "package": "cxr-testplugin-nullwriter",
        "version": "1.2.3",
        "builtin": False,
        "hooks": ["register_writers"],
    }
    assert rows["cxr_infer.writers"]["builtin"] and "null" in available_writers()


@pytest.mark.parametrize(("allow", "loaded"), [("", False), ("someother", False), ("someother, nullwriter", True)])
def test_allow_list_restricts_installed_plugins(install, monkeypatch: pytest.MonkeyPatch, allow: str, loaded: bool) -> None:
    install("nullwriter", WRITER_PLUGIN)
    monkeypatch.setenv(ALLOW_ENV, allow)
    pm = get_plugin_manager()
    assert (pm.get_plugin("nullwriter") is not None) == loaded
    assert ("null" in available_writers()) == loaded
    assert {"csv", "jsonl"} <= set(available_writers())  # built-ins always load


def test_a_plugin_that_fails_to_import_is_named(install, monkeypatch: pytest.MonkeyPatch) -> None:
    install("crashy", "raise ImportError('needs libfoo')\n")
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(PluginError, match=f"'crashy' failed in hook load: ImportError: needs libfoo .*{ALLOW_ENV}"):
        get_plugin_manager()
    monkeypatch.setenv(ALLOW_ENV, "")
    reset_plugin_manager()
    assert get_plugin_manager().get_plugin("crashy") is None  # the allow-list is the way out


def test_train_plugins_command_prints_json(plugin) -> None:
    plugin("tiny-models", ModelPlugin())
    result = CliRunner().invoke(train_main, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["tiny-models"]["hooks"] == ["register_models"]
    assert rows["cxr_train.augment"]["hooks"] == ["register_augmentations"]




def test_infer_plugins_command_lists_the_installed_examples() -> None:
    result = CliRunner().invoke(infer_main, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    for name, package in EXAMPLE_PLUGINS.items():
        assert (rows[name]["package"], rows[name]["version"]) == (package, version(package))
    assert rows["cxr_infer.readers"]["builtin"] and rows["cxr_infer.readers"]["hooks"] == ["register_readers"]


def test_example_plugins_load_in_cxr_infer_without_the_training_stack() -> None:
    """Plugins of group ``cxr`` load in cxr-infer too, so none may import torch or cxr_train at import time."""
    code = (
        "import json, sys; from cxr_infer.plugins import get_plugin_manager; pm = get_plugin_manager(); "
        "print(json.dumps([sorted(n for n, _ in pm.list_name_plugin()), sorted({m.split('.')[0] for m in sys.modules})]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, modules = json.loads(out.stdout)
    assert set(EXAMPLE_PLUGINS) <= set(loaded), "install the examples: pip install -e plugins/cxr-clahe -e plugins/cxr-densenet -e plugins/cxr-fhir"
    assert not {"torch", "torchvision", "cxr_train"} & set(modules)
