"""`python -m filterd` is the `filterd` command."""
import sys

from .cli import main

sys.exit(main())
