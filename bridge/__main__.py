import sys
from hushbridge.cli import main

sys.exit(main())
