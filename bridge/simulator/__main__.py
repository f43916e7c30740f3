"""`python -m bridge.simulator WEBHOOK_URL ...`: the same as `phone-bridge simulate`."""

import sys

from bridge.simulator.command import main

sys.exit(main())
