"""A run that replaces records removes the images they named from --images-dir: since images are never written
over a file, a rerun (--overwrite, or an item --resume runs again) otherwise saved <id>_<n>_2.png beside the old
ones, and the folder filled with images no record named. Only an old record's own image goes: a path of the form
DIR/<name>, a regular file there, still of the record's sha256."""

from __future__ import annotations

import hashlib
import json
import os

from .conftest import cli, read_jsonl, write_jsonl

DRAW = "import matplotlib.pyplot as plt\nplt.plot({})\nplt.title({!r})\nplt.show()"


def _corpus(tmp_path, title, ids=("a", "b")):
    return str(write_jsonl(tmp_path / f"in-{title}.jsonl",
                           [{"id": i, "code": DRAW.format([1, 2, n + 1], f"{i} {title}")} for n, i in enumerate(ids)]))


def _run(corpus, out, images, *flags):
    done = cli(corpus, "--out", str(out), "--images-dir", str(images), "--workers", "1", "-q", *flags)
    assert done.returncode == 0, done.stderr
    return {record["id"]: record for record in read_jsonl(out)}


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _check_paths(records):
    """Every record's image is where its path says, with its sha256."""
    for record in records.values():
        for image in record["images"]:
            assert _sha(image["path"]) == image["sha256"], record["id"]


def test_overwrite_twice_leaves_the_second_runs_images_under_plain_names(tmp_path):
    images, out = tmp_path / "img", tmp_path / "out.jsonl"
    images.mkdir()
    (images / "notes.txt").write_bytes(b"the user's notes")
    (images / "a_0.png.bak").write_bytes(b"the user's backup")
    first = _run(_corpus(tmp_path, "first"), out, images)
    second = _run(_corpus(tmp_path, "second"), out, images, "--overwrite")
    assert sorted(p.name for p in images.iterdir()) == ["a_0.png", "a_0.png.bak", "b_0.png", "notes.txt"]
    assert {i: r["images"][0]["path"] for i, r in second.items()} == {"a": str(images / "a_0.png"),
                                                                        "b": str(images / "b_0.png")}
    _check_paths(second)
    assert second["a"]["images"][0]["sha256"] != first["a"]["images"][0]["sha256"]  # the second run's image
    assert (images / "notes.txt").read_bytes() == b"the user's notes"
    assert (images / "a_0.png.bak").read_bytes() == b"the user's backup"


def test_a_file_the_user_put_in_an_images_place_is_kept(tmp_path):
    images, out = tmp_path / "img", tmp_path / "out.jsonl"
    _run(_corpus(tmp_path, "first"), out, images)
    mine = (images / "a_0.png").read_bytes()[::-1]  # the record's size, not its sha256
    (images / "a_0.png").write_bytes(mine)
    second = _run(_corpus(tmp_path, "second"), out, images, "--overwrite")
    assert (images / "a_0.png").read_bytes() == mine
    assert second["a"]["images"][0]["path"] == str(images / "a_0_2.png")
    assert second["b"]["images"][0]["path"] == str(images / "b_0.png")  # b's old image was its own: replaced
    assert sorted(p.name for p in images.iterdir()) == ["a_0.png", "a_0_2.png", "b_0.png"]
    _check_paths(second)


def test_a_forged_results_file_removes_nothing_outside_images_dir(tmp_path):
    images, out = tmp_path / "img", tmp_path / "out.jsonl"
    first = _run(_corpus(tmp_path, "first", ids=("a",)), out, images)
    secret = b"a file outside --images-dir"
    digest = hashlib.sha256(secret).hexdigest()
    outside = tmp_path / "outside.png"
    outside.write_bytes(secret)
    (images / "link.png").symlink_to(outside)
    (images / "sub").mkdir()
    (images / "sub" / "deep.png").write_bytes(secret)
    forged = [str(outside), f"{images}/../outside.png", "../outside.png", str(images / "link.png"),
              str(images / "sub" / "deep.png"), f"{images}//sub/deep.png", str(images), f"{images}/."]
    lines = [json.dumps({"id": f"f{n}", "outcome": "OUTCOME_OK",
                         "images": [{"name": "x.png", "size_bytes": len(secret), "sha256": digest, "path": p}]})
             for n, p in enumerate(forged)]
    lines += ['{"id": "broken", "outcome": "OUTCOME_OK", "images": [{"path": ', '["not a record"]',
              json.dumps({"id": "odd", "outcome": "OUTCOME_OK", "images": ["x", None, {"path": 3}]}),
              json.dumps(first["a"])]  # a's real record: its image is the one that goes
    out.write_text("\n".join(lines) + "\n")
    second = _run(_corpus(tmp_path, "second", ids=("a",)), out, images, "--overwrite")
    assert outside.read_bytes() == secret
    assert (images / "link.png").is_symlink() and os.readlink(images / "link.png") == str(outside)
    assert (images / "sub" / "deep.png").read_bytes() == secret
    assert second["a"]["images"][0]["path"] == str(images / "a_0.png")
    assert sorted(p.name for p in images.iterdir()) == ["a_0.png", "link.png", "sub"]
    _check_paths(second)


def test_resume_replaces_only_the_images_of_the_items_it_runs_again(tmp_path):
    """--resume runs INVALID_INPUT records again. A real one carries no image (it never ran), so b's record is
    marked invalid by hand, as an older or edited file may have it: its image goes, a's stays as it was."""
    images, out = tmp_path / "img", tmp_path / "out.jsonl"
    first = _run(_corpus(tmp_path, "first"), out, images)
    a_before = os.stat(images / "a_0.png")
    out.write_text(json.dumps(first["a"]) + "\n" + json.dumps({**first["b"], "outcome": "INVALID_INPUT"}) + "\n")
    second = _run(_corpus(tmp_path, "second"), out, images, "--resume")
    assert second["a"] == first["a"]
    a_after = os.stat(images / "a_0.png")
    assert (a_after.st_ino, a_after.st_mtime_ns) == (a_before.st_ino, a_before.st_mtime_ns)
    assert second["b"]["images"][0]["path"] == str(images / "b_0.png")
    assert second["b"]["images"][0]["sha256"] != first["b"]["images"][0]["sha256"]
    assert sorted(p.name for p in images.iterdir()) == ["a_0.png", "b_0.png"]
    _check_paths(second)
