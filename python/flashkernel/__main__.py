import sys

from flashkernel.cli import main

sys.exit(main())
