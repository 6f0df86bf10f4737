"""What runs next to untrusted code: the zygote, its workers and session trees.

The rule: nothing in this folder imports the host side of the package (the
``Sandbox`` and ``Session`` classes, ``collect``, ``launcher``, ``verdict``,
``inputs``, adapters, cli, batch). It may import the shared leaves both sides use
(``protocol``, ``codec``, ``codec_columns``, ``codec_labels`` and ``codec_times``, ``streams``, ``rundirs``, ``errors``, ``records``,
``policy``, ``image``, ``filetypes``, ``bootstrap``) and ``confine``. ``tests/unit/
test_boundary.py`` proves the rule. The host, in turn, trusts nothing that comes
back from here: frames, names, sizes, exits and resource figures are hostile input.

- ``zygote``: preload the image, keep confined workers forked, hand them requests; ``reaping``: what it does
  when a worker ends.
- ``worker``: a forked worker's life: confine, then serve one request or a session.
- ``request``: one request in a confined process (run, call), and what it reports.
- ``session_tree``: a session's root (talks to the host, keeps the lines): its entry point and process model;
  ``session_root`` its loop and answers to the host, ``session_root_state`` what it keeps and what its states
  report, ``session_nodes`` its records of them; ``session_states``: its frozen states and the runners they fork,
  one per run.
- ``call``: the worker side of ``Sandbox.call``.
- ``hard_exit``: ``os._exit`` in a run's process reports the run's output and files before it ends it.
- ``preload``, ``allowlist``, ``telemetry``, ``proc``, ``at_fork`` (the zygote runs the at-fork callbacks, its
  forker and clones skip them): what those use.
"""
