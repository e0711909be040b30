import sys

from torch_training.cli import main

sys.exit(main())
