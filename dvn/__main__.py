import sys

from dvn.cli import main

sys.exit(main())
