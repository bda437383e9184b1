"""`python -m sopkit`."""

from ._cli import main

main()
