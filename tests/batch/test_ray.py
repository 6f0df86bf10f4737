"""The Ray backend on a local Ray (2 CPUs): same records as the local backend, modulo measurements."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import psutil
import pytest

import sandbox
import sandbox.batch as batch
from sandbox.batch import MEASURED_FIELDS, read_items

from .conftest import assert_results_come_while_the_source_pauses, cli, light_corpus, write_jsonl

ray = pytest.importorskip("ray")
from sandbox.batch_ray import check_reachable  # noqa: E402  (imports Ray)


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    saved = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    signal.signal(signal.SIGTERM, saved)  # ray.init leaves sys.exit there: this pytest would outlive a SIGTERM
    yield
    ray.shutdown()


def comparable(records, images_dir):
    """Records keyed by id, without measurements; image paths relative to their folder."""
    table = {}
    for record in records:
        data = record.to_json()
        for name in MEASURED_FIELDS:
            data.pop(name)
        for image in data["images"]:
            image["path"] = os.path.relpath(image["path"], images_dir)
        assert data["id"] not in table
        table[data["id"]] = data
    return table


def test_ray_and_local_give_identical_records(local_ray, tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", light_corpus() + ["{broken"])
    results = {}
    for backend in ("local", "ray"):
        with open(corpus) as fh:
            items = list(read_items(fh))
        images_dir = str(tmp_path / backend)
        results[backend] = comparable(batch.run(items, backend=backend, workers=2, images_dir=images_dir), images_dir)
        files = sorted(os.listdir(images_dir))
        assert files and all(f.endswith(".png") for f in files)
    local, remote = results["local"], results["ray"]
    assert set(local) == set(remote) and len(local) >= 40
    assert [k for k in local if local[k] != remote[k]] == []
    outcomes = {r["outcome"] for r in local.values()}
    assert {"OUTCOME_OK", "OUTCOME_FAILED", "OUTCOME_DEADLINE_EXCEEDED", "INVALID_INPUT"} <= outcomes
    for name in os.listdir(tmp_path / "local"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()


def test_ray_engine_refuses_more_workers_than_cpus(local_ray):
    with pytest.raises(batch.InputError, match="workers=3 needs 3 CPUs but the Ray cluster has 2"):
        batch.run([], backend="ray", workers=3)


def test_a_sandbox_an_actor_cannot_start_is_the_sandbox_error_itself(local_ray):
    """An image name unknown on the node was Ray's ActorDiedError with a traceback as its text, after three restarts;
    `sandbox batch` printed it as a crash."""
    with pytest.raises(sandbox.ImageError, match=r"unknown image 'no-such-image' \(available: "):
        batch.run([], backend="ray", workers=1, image="no-such-image")


def test_stop_on_ray_closes_the_actors_and_their_sandboxes(local_ray):
    stop = threading.Event()
    items = [batch.BatchItem(id=str(i), code="import time\ntime.sleep(0.3)") for i in range(20)]
    got, zygotes = [], []
    for record in batch.run(items, backend="ray", workers=2, stop=stop):
        got.append(record)
        zygotes = actor_zygotes()
        stop.set()
    assert 1 <= len(got) < 8
    assert len(zygotes) == 2  # one warm Sandbox per actor
    deadline = time.monotonic() + 10
    while any(running(p) for p in zygotes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(p) for p in zygotes), "an actor's zygote outlived the batch"


def actor_zygotes() -> list[psutil.Process]:
    """Zygotes whose parent is a Ray actor process."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "sandbox.inside.zygote" in " ".join(process.info["cmdline"] or ()) and \
                    "SandboxActor" in " ".join(process.parent().cmdline()):
                found.append(process)
        except (psutil.NoSuchProcess, AttributeError):
            continue
    return found


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ray_yields_finished_results_while_the_source_pauses(local_ray):
    assert_results_come_while_the_source_pauses(backend="ray")


def test_an_address_no_cluster_answers_is_refused_before_out_is_touched(tmp_path):
    """``ray.init`` retries an address nothing listens on for good (a mistyped port, a stopped cluster): ``sandbox
    batch --backend ray --address ...`` sat there logging retries. It is refused at once, --out left as it was."""
    with socket.socket() as probe:  # a loopback port nothing listens on once this socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    corpus = write_jsonl(tmp_path / "in.jsonl", light_corpus()[:1])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n')
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        done = cli(str(corpus), "--out", str(out), "--overwrite", "--backend", "ray", "--address", address,
                   timeout=60)
        assert done.returncode == 2, done.stderr
        assert f"no Ray cluster answers at '{address}' (127.0.0.1:{port}: ECONNREFUSED" in done.stderr
    assert out.read_text() == '{"id": "i0", "line": 1, "outcome": "OUTCOME_OK"}\n'
    for address, words in ((":6379", "names no host"), ("head:port", "Ray address .head:port.: ")):
        with pytest.raises(sandbox.InputError, match=words):
            check_reachable(address)


def test_ray_actors_run_in_the_venv_given(local_ray, linked_venv, stdlib_image_file):
    """venv= reaches each actor's Sandbox: its runs report that environment's interpreter."""
    code = "import sys\nprint(sys.prefix)\nprint(sys.executable)"
    (record,) = batch.run([{"id": "which", "code": code}], backend="ray", workers=1, image=stdlib_image_file,
                          venv=str(linked_venv))
    assert record.outcome == "OUTCOME_OK" and record.output == f"{linked_venv}\n{linked_venv}/bin/python\n", record


def test_a_venv_an_actor_cannot_use_is_the_image_error_itself(local_ray, tmp_path):
    with pytest.raises(sandbox.ImageError, match=f"{tmp_path / 'none'} is not a virtual environment"):
        batch.run([], backend="ray", workers=1, venv=str(tmp_path / "none"))
