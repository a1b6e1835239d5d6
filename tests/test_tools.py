"""Missing external programs skip outside CI and fail inside it (tests/tools.py)."""
import pytest

from tests import tools

ABSENT = "meterline-no-such-program"


def test_a_missing_program_skips_naming_its_package(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="package some-package; apt-get install"):
        tools.need(ABSENT, "some-package")


def test_a_missing_program_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI needs every tool"):
        tools.need(ABSENT, "some-package")


def test_a_present_program_is_found(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert tools.need("sh", "dash").endswith("/sh")
