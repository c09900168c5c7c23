"""`python -m eventbus_core.cli`."""

from eventbus_core.cli import main

raise SystemExit(main())
