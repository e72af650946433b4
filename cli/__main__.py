"""``python -m curvlens_cli`` (and ``torchrun ... -m curvlens_cli``): the ``curvlens`` command."""

from curvlens_cli.main import main

main()
