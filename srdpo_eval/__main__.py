import sys

from srdpo_eval.cli import main

sys.exit(main())
