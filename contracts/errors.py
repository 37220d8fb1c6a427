"""The one exception for an expected mistake of a user (bad input, bad flag, missing file, unreachable URL).

The command line prints its message as one line and exits with status 2; anything else is a bug and
keeps its traceback. The message names the culprit (file:line and field, the flag or config key, or the
URL) and says what to do.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix; ``str(err)`` is the whole message (a ValueError, as bad values are)."""
