"""COLO: checkpoint-based fault tolerance between a primary and a secondary qmpd.

Modules: :mod:`.state` (COLO enums, failover compare-and-set, query-colo-status),
:mod:`.messages` (QEMU's COLO message framing), :mod:`.output` (output commit),
:mod:`.blob` (one checkpoint's payload), :mod:`.primary` / :mod:`.secondary` (the two
loops), :mod:`.manager` (owner of COLO tasks, failover entry point).
"""
