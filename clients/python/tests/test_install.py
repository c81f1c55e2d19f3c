"""Acceptance 6: `pip install ./clients/python` in a fresh virtual environment, then the
README's quick start, run as an agent uid against a real daemon, works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from lanyard_harness import ROOT, Daemon, User, command_as

README = os.path.join(ROOT, "clients", "python", "README.md")


def quick_start() -> str:
    """The first python block under the README's "## Quick start"."""
    text = open(README).read()
    section = text[text.index("## Quick start"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "clients/python/README.md has no python block under ## Quick start"
    return match.group(1)


@pytest.fixture
def fresh_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="lanyard-install.")
    os.chmod(path, 0o755)  # the agent uid runs the venv's python
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_pip_install_in_a_fresh_venv_then_the_readme_quick_start_works(daemon: Daemon, agent_user: User,
                                                                     fresh_dir: str) -> None:
    venv = os.path.join(fresh_dir, "venv")
    subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
    install = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "./clients/python"], cwd=ROOT,
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    script = os.path.join(fresh_dir, "quick_start.py")
    with open(script, "w") as f:
        f.write(quick_start())
    os.chmod(script, 0o644)

    python = os.path.join(venv, "bin", "python")
    where = command_as(agent_user, [python, "-c", "import lanyard; print(lanyard.__file__)"], cwd=fresh_dir)
    assert where.stdout.startswith(venv + "/"), where  # the installed copy, not the working tree
    run = command_as(agent_user, [python, script], env=daemon.env, cwd=fresh_dir)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "I am spiffe://py.internal/agent/a"
    assert "Decision.ALLOW" in lines[1] and "auto-approved" in lines[1]
    assert re.fullmatch(r"lease \S+ until \d+", lines[2])
    assert lines[3] == "cloned org/repo"
    assert len(quick_start().strip().splitlines()) <= 13
