"""``python -m lambda_function PATH_OR_URL...``: classify through the Lambda handler."""

import sys

from lambda_function.cli import main

sys.exit(main())
