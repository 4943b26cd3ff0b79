"""`python -m clipdata.cli`: the same as the `clipdata` command."""
from . import main

main()
