import sys

from pagerfs.cli import main

sys.exit(main())
