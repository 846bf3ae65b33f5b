"""``python -m dropbox_sign_provider.testing.emulator``: the command line."""

import sys

from dropbox_sign_provider.testing.emulator.cli import main

sys.exit(main())
