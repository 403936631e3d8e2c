"""``python -m maskfx ...`` (what ``torchrun -m maskfx train ...`` runs): the ``maskfx`` command."""
import sys

from maskfx.cli import main

sys.exit(main())
