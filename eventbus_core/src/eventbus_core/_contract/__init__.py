"""The backend contract suite; the public entry point is `eventbus_core.testing`."""

import pkgutil
import sys

# pytest shows the values in a failed plain `assert` only in modules it rewrote as they were
# imported, and unless told it rewrites test modules and conftest files only: without this,
# the suite of an installed eventbus_core fails with a bare `AssertionError`. Here, before any
# module of the suite is imported (every import of one runs this first), each is named: the
# package itself is being imported already, too late to rewrite (pytest would warn). pytest is
# not imported for it: outside a pytest run there is no rewriting to ask for.
_pytest = sys.modules.get("pytest")
if _pytest is not None:
    _pytest.register_assert_rewrite(
        *(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__))
    )
