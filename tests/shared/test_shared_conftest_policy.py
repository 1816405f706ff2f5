"""The shared fixtures' skip policy: skip locally, fail under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"

PROBES = """
def test_tool(need_tool):
    need_tool("voxguard-no-such-tool")

def test_shared(shared_dir):
    pass

def test_present(need_tool):
    assert need_tool("sh").name == "sh"
"""


@pytest.fixture
def probe(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(test_probe=PROBES)
    monkeypatch.setenv("VOXGUARD_SHARED_DIR", str(pytester.path / "no-such-shared"))
    return pytester


def test_missing_components_skip_with_a_reason(probe: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = probe.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*voxguard-no-such-tool is not installed*", "*shared folder*is missing*"])


def test_missing_components_fail_under_ci(probe: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = probe.runpytest()
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*CI=true and a required component is missing*"])


def test_shared_dir_points_at_the_shared_folder(shared_dir: Path) -> None:
    assert (shared_dir / "design.md").is_file()
