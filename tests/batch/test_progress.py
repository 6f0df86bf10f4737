"""The progress bar appears on a terminal (runs done, rate, failures, ETA) and nowhere else."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios
import subprocess
import sys

import pytest

from .conftest import write_jsonl

pytest.importorskip("tqdm")


def test_progress_bar_on_a_terminal(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "code": "print(1)"}, {"id": "b", "code": "1/0"},
                                                 {"id": "c", "code": "print(3)"}])
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    try:
        proc = subprocess.Popen([sys.executable, "-m", "sandbox", "batch", str(corpus), "--out",
                                 str(tmp_path / "out.jsonl"), "-q"], stdout=subprocess.DEVNULL, stderr=slave,
                                env={**os.environ, "COLUMNS": "120"})
        os.close(slave)
        screen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    text = screen.decode(errors="replace")
    assert "3/3" in text and "run/s" in text and "failed=1" in text and "<00:00" in text
