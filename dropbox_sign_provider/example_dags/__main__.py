"""``python -m dropbox_sign_provider.example_dags DEST``: the same as ``dropbox-sign-example-dags``."""

import sys

from dropbox_sign_provider.example_dags import main

sys.exit(main())
