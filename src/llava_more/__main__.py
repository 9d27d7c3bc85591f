"""``python -m llava_more`` is the ``llava-more`` console script (used by the workflow rules)."""

import sys

from llava_more.cli import main

sys.exit(main())
