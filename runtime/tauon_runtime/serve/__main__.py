"""`python -m tauon_runtime.serve --config PATH` (the same as `tauon-runtime serve`)."""

import sys

from tauon_runtime.serve import main

sys.exit(main())
