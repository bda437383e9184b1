"""`python -m sopkit`."""

from sopkit._cli.app import main

if __name__ == "__main__":  # not when a worker process (simulate --workers) imports it
    main()
