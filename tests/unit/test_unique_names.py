"""Every file a run returns has a name of its own (verdict.unique_names: names come from inside)."""

from __future__ import annotations

from sandbox.results import File
from sandbox.verdict import unique_names


def names(items: list[File]) -> list[str]:
    return [item.name for item in items]


def test_distinct_names_are_kept_as_they_are():
    images, files = [File("figure_1.png", b"1"), File("figure_2.png", b"2")], [File("out.csv", b"3")]
    assert unique_names(images, files) == (images, files)


def test_the_last_reported_keeps_the_name_earlier_ones_get_a_suffix():
    # a figure shown as figure_1.png, then a work-dir file saved under the same name (reported last)
    images = [File("figure_1.png", b"shown"), File("figure_1_2.png", b"saved too"), File("figure_1.png", b"file")]
    kept_images, kept_files = unique_names(images, [File("figure_1.png", b"truncated file", truncated=True)])
    assert names(kept_images) == ["figure_1_4.png", "figure_1_2.png", "figure_1_3.png"]
    assert names(kept_files) == ["figure_1.png"] and kept_files[0].data == b"truncated file"
    assert [f.data for f in kept_images] == [b"shown", b"saved too", b"file"]


def test_hostile_repeats_all_become_distinct():
    images = [File("a.png", bytes([i])) for i in range(50)]
    kept, _ = unique_names(images, [])
    assert len(set(names(kept))) == 50 and kept[-1].name == "a.png"
