import sys

from hil.entry import main

sys.exit(main())
