"""The ``curvlens`` command-line tool (installed as the ``curvlens_cli`` package)."""
