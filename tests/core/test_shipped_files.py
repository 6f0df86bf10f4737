"""Every shipped policy with every shipped image runs a smoke snippet: the libraries the image documents
import, a figure comes back, the policy's limits are the run's (STYLE 13; nsjail's ``make test`` over its
configs). An image not installed here is skipped with what is missing (``sandbox image install NAME``)."""

from __future__ import annotations

import pytest

import sandbox
from sandbox.image import Image, available_images, check
from sandbox.policy import available_policies

SMOKE = """
import importlib, resource
for root in {roots!r}:
    importlib.import_module(root)
print("imported", len({roots!r}))
print("cpu", resource.getrlimit(resource.RLIMIT_CPU)[1])
import matplotlib.pyplot as plt
plt.plot([1, 2, 3])
plt.show()
"""


def _not_installed(image: str) -> str:
    missing = [status.library.requirement for status in check(image) if not status.ok]
    return f"image {image!r} not installed here (missing or other version: {' '.join(missing)})" if missing else ""


@pytest.mark.parametrize("image", available_images())
@pytest.mark.parametrize("policy", available_policies())
def test_a_smoke_snippet_runs_under_every_shipped_policy_and_image(policy, image):
    missing = _not_installed(image)
    if missing:
        pytest.skip(missing)
    roots = sorted(Image.load(image).allowed_roots)
    # Warm zygotes: a cold one maps no image, and importing nearly all of vertex at once passes strict's address
    # space there (README, "Cold start").
    with sandbox.Sandbox(policy=policy, image=image, cold_start=False) as sb:
        r = sb.run(SMOKE.format(roots=roots), timeout=60)
        assert r.ok, r.error
        assert r.stdout == f"imported {len(roots)}\ncpu {max(1, int(sb.policy.limits.cpu_seconds))}\n"
        assert [(f.name, f.mime_type) for f in r.images] == [("figure_1.png", "image/png")]
        assert r.images[0].data.startswith(b"\x89PNG")
        denied = sb.run("open('/etc/shadow').read()")
        assert denied.outcome == sandbox.Outcome.FAILED and denied.reason == "exception"

