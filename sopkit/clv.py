"""Customer-lifetime-value models, public: BG/NBD and Gamma-Gamma fitted by maximum
likelihood, as pure functions of plain data returning frozen dataclasses (docs/analytics.md).

Needs the optional extra: `pip install 'sopkit[clv]'` (numpy and scipy).
"""

# the front door's names, exactly (tests/test_exported_members.py pins the list)
from sopkit._stats.clv import *  # noqa: F403  # re-exports what the front door's __all__ lists
from sopkit._stats.clv import __all__ as __all__
