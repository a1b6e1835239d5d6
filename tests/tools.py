"""External programs some tests need (Chromium, poppler-utils, curl, openssl).

Outside CI a missing program skips the tests that need it, with a reason that
names the Debian package to install, so a first run on a new machine is green
and says what it did not check. With the environment variable CI set (as
`.ci/run` sets it), a missing program fails those tests instead: CI checks
everything.
"""
import os
import shutil

import pytest

INSTALL_HINT = "apt-get install chromium poppler-utils curl openssl"


def in_ci():
    return bool(os.environ.get("CI"))


def missing(what, package):
    """Skip (or, in CI, fail) the current test: `what` is not installed."""
    reason = f"{what} is not installed (package {package}; {INSTALL_HINT})"
    if in_ci():
        pytest.fail(f"{reason}; CI needs every tool", pytrace=False)
    pytest.skip(reason)


def need(program, package):
    """The path of `program`, or skip/fail the test as `missing` does."""
    path = shutil.which(program)
    if path is None:
        missing(program, package)
    return path
