"""The README's Python API example runs as printed, and runs again in the same place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from miniunlearn.deletion import ledger_records
from miniunlearn.errors import RunDirError
from miniunlearn.training import TrainConfig, open_run, train_run

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_example() -> str:
    """The first ```python block under the README's "## Python API" heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert found, "no python block under ## Python API"
    return found.group(1)


@pytest.mark.slow
def test_the_python_api_example_runs_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(python_api_example(), str(README), "exec")
    exec(code, {"__name__": "__main__"})
    exec(code, {"__name__": "__main__"})  # the run exists now; the same request is re-sent

    records, disagreement = ledger_records(open_run(tmp_path / "runs" / "digits"))
    assert disagreement is None
    assert [r["state"] for r in records] == ["done"]

    # training into the place again is refused in words that fit a Python caller too
    with pytest.raises(RunDirError, match=r"already exists.*open_run.*--out on the command line"):
        train_run(TrainConfig(dataset="digits", epochs=1), tmp_path / "runs" / "digits", progress=False)
