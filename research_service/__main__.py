"""`python -m research_service` runs the console script."""

from research_service.cli import main

raise SystemExit(main())
