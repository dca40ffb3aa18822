"""Command-line tools for users of qmpd that run beside it, never inside it.

:mod:`qmpd.tools.check_stream` (``qmpd-check-stream``) checks a captured or live output
stream of the counter guest. The import contract (``make lint``) checks that the daemon
never imports this package.
"""
