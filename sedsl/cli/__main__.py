"""`python -m sedsl.cli ...` runs the command."""

from sedsl.cli import main

main()
