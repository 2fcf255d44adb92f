import sys

from pdlib.train.cli import main

sys.exit(main())
