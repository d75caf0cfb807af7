"""``python -m minimamba_core --checkpoint DIR --prompt TEXT [...]``: stream a continuation.

The command line of :func:`minimamba_core.generate.main` (``--help`` lists the options). Also
installed as the ``minimamba-generate`` command.
"""

from .generate import main

if __name__ == "__main__":
    main()
