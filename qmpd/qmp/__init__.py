"""The QMP wire layer: framing, JSON splitting, greeting, negotiation, sessions, listeners.

Modules: :mod:`~qmpd.qmp.jsonstream` (QEMU-faithful streaming JSON splitter),
:mod:`~qmpd.qmp.wire` (output encoding), :mod:`~qmpd.qmp.envelope` (request member
checks), :mod:`~qmpd.qmp.session` (one connection), :mod:`~qmpd.qmp.server`
(UNIX/TCP listeners). Commands are reached only through the
:class:`~qmpd.qmp.session.Dispatcher` protocol injected by the daemon.
"""
