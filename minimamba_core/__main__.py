"""``python -m minimamba_core --checkpoint DIR --prompt TEXT [...]``: stream a continuation.

The command line of :func:`minimamba_core.interop.cli.main` (``--help`` lists the options). Also
installed as the ``minimamba-generate`` command.
"""

from .interop.cli import main

if __name__ == "__main__":
    main()
