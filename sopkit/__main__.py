"""`python -m sopkit`."""

from sopkit._cli.app import main

main()
