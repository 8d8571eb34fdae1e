import sys

from streamer.cli import console_main

sys.exit(console_main())
