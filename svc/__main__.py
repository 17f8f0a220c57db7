"""`python -m svc`: the `tensorflow_model_server` command line."""

from svc.cli import main

raise SystemExit(main())
