"""`python -m aspired_client COMMAND ...`: the client commands of the `aspired` command line."""

from aspired_client.cli import main

raise SystemExit(main(program="aspired-client"))
