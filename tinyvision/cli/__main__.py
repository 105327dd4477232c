"""`python -m tinyvision.cli`: the same command as `tinyvision`."""
from . import entry

entry()
