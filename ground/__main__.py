import sys

from ground.entry import main

sys.exit(main())
