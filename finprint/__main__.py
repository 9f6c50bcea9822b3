import sys

from finprint.cli import main

sys.exit(main())
