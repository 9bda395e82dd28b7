"""`fedgrpo supernode`: its poll interval setting and its one-shot ClientApp launcher (the Flower
patches it applies are tested in test_flower_patches.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedgrpo.engines import supernode as fast_supernode
from fedgrpo.engines.clientapp_worker import write_one_shot_launcher
from fedgrpo.engines.supernode import poll_interval
from fedgrpo.errors import ConfigError


@pytest.mark.parametrize("raw, expected", [(None, fast_supernode.DEFAULT_POLL_S), ("", fast_supernode.DEFAULT_POLL_S),
                                           ("0.2", 0.2), ("3", 3.0)])
def test_poll_interval(raw, expected):
    env = {} if raw is None else {fast_supernode.POLL_ENV: raw}
    assert poll_interval(env) == expected


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "5", "nan", "inf"])
def test_poll_interval_rejects_nonsense(raw):
    with pytest.raises(ConfigError, match="FEDGRPO_SUPERNODE_POLL_S"):
        poll_interval({fast_supernode.POLL_ENV: raw})


def test_bad_interval_is_a_one_line_error_exit_2():
    import os

    env = {**os.environ, fast_supernode.POLL_ENV: "abc"}
    proc = subprocess.run([sys.executable, "-m", "fedgrpo.cli", "supernode", "--insecure"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "FEDGRPO_SUPERNODE_POLL_S" in proc.stderr


def test_clientapp_launcher_script(tmp_path):
    path = write_one_shot_launcher(str(tmp_path))
    text = Path(path).read_text()
    assert text.startswith(f"#!{sys.executable}\n") and "clientapp_main()" in text
    # Flower's own flwr-clientapp parser answers --help without importing the SuperNode package.
    code = ("import sys; sys.argv=['x','--help']\n"
            "from fedgrpo.engines.clientapp_worker import clientapp_main\n"
            "try:\n    clientapp_main()\nexcept SystemExit:\n    pass\n"
            "print('flwr.supernode.cli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "Run a Flower ClientApp" in out.stdout
    assert out.stdout.strip().endswith("False")
