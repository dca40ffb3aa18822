"""Client-side tools that start and drive qmpd processes: never imported by the daemon.

:mod:`qmpd.testing.harness` starts qmpd processes, connects QMP clients and outside
readers of the guest's serial output (used by the demo, the end-to-end tests and the
benchmarks); :mod:`qmpd.testing.demo` is ``make demo``. The import contract
(``make lint``) checks that nothing under ``qmpd.daemon`` imports this package.
"""
