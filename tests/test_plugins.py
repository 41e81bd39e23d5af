"""Methods from other installed packages, through the ``miniunlearn.methods`` entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = '''
from dataclasses import dataclass
from miniunlearn.methods.base import UnlearningMethod, register


class Identity(UnlearningMethod):
    """Returns the current model unchanged."""

    name = "identity-plugin"
    summary = "a third-party method that changes nothing"

    @dataclass(frozen=True)
    class Options:
        """No options."""

    def _unlearn(self, request):
        return request.start_params(), 0, {"plugin": True}


class Impostor(Identity):
    """Claims a built-in method's name."""

    name = "mini"


class Tuned(Identity):
    """Plain typed options, in a module without ``from __future__ import annotations``."""

    name = "tuned-plugin"

    @dataclass(frozen=True)
    class Options:
        """A float and an int option."""

        rate: float = 0.1
        steps: int = 1
'''


def install_plugin(site: Path, entries: str) -> None:
    """Lay out an installed distribution (module + dist-info with entry points) in ``site``."""
    (site / "toy_plugin.py").write_text(PLUGIN)
    info = site / "toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[miniunlearn.methods]\n{entries}\n")


def run_python(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that sees ``site`` as installed packages."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)


def test_an_installed_plugin_method_is_listed_and_runs(tmp_path: Path) -> None:
    install_plugin(tmp_path, "identity-plugin = toy_plugin:Identity")
    out = run_python(
        tmp_path,
        "import numpy as np, torch\n"
        "from miniunlearn.methods import available_methods, get_method, UnlearnRequest\n"
        "from miniunlearn.training import TrainConfig, train_run\n"
        f"run = train_run(TrainConfig(dataset='digits', epochs=5), {str(tmp_path / 'r')!r}, progress=False)\n"
        "result = get_method('identity-plugin').unlearn(UnlearnRequest(run, np.array([1, 2])))\n"
        "assert torch.equal(result.params, run.load_model_params())\n"
        "print(available_methods(), result.record.diagnostics)\n",
    )
    assert "'identity-plugin'" in out.stdout and "'mini'" in out.stdout and "'plugin': True" in out.stdout


def test_a_broken_or_clashing_plugin_is_skipped_with_a_warning(tmp_path: Path) -> None:
    install_plugin(tmp_path, "broken = toy_plugin:DoesNotExist\nclash = toy_plugin:Impostor")
    code = (
        "from miniunlearn.methods import available_methods, registry\n"
        "print(available_methods(), registry()['mini'].__module__)"
    )
    out = run_python(tmp_path, code)
    assert "'identity-plugin'" not in out.stdout and "miniunlearn.methods.mini" in out.stdout
    assert "plugin 'broken'" in out.stderr and "plugin 'clash'" in out.stderr


def test_an_installed_plugins_options_are_type_checked_without_future_annotations(tmp_path: Path) -> None:
    install_plugin(tmp_path, "tuned-plugin = toy_plugin:Tuned")
    out = run_python(
        tmp_path,
        "from miniunlearn.errors import ConfigError\n"
        "from miniunlearn.methods import get_method, method_class\n"
        "from miniunlearn.methods.options import format_method_help\n"
        "for bad in ({'rate': 'fast'}, {'steps': 2.5}, {'steps': True}):\n"
        "    try:\n"
        "        get_method('tuned-plugin', **bad)\n"
        "    except ConfigError as exc:\n"
        "        print('refused:', exc)\n"
        "print(get_method('tuned-plugin', rate=1, steps=3).options)\n"
        "print(format_method_help(method_class('tuned-plugin')))\n",
    )
    assert out.stdout.count("refused: method 'tuned-plugin'") == 3
    assert "option 'rate' must be of type float" in out.stdout and "got 'fast'" in out.stdout
    assert "option 'steps' must be of type int" in out.stdout and "got 2.5" in out.stdout
    assert "got True" in out.stdout
    assert "Options(rate=1.0, steps=3)" in out.stdout
    assert "    rate (float, default 0.1)" in out.stdout and "    steps (int, default 1)" in out.stdout
