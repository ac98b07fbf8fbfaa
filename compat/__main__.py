"""`python -m compat`: run the client compatibility matrix (see compat/runner.py)."""
import sys

from compat.runner import main

sys.exit(main())
