"""`python -m hodei.cli`, as `python -m hodei`."""

from hodei.cli import main

main()
