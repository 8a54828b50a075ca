"""Translation of visitor-facing and dashboard text.

Templates call ``_()`` and ``ngettext()``; Python code imports ``gettext`` and
``ngettext`` from here. The language of the current request lives in a context
variable, so one relay serves several languages at once.
"""

from __future__ import annotations

import contextvars
import gettext as _gettext

DEFAULT_LANGUAGE = "en"

_SOURCE = _gettext.NullTranslations()
_current: contextvars.ContextVar[_gettext.NullTranslations | None] = (
    contextvars.ContextVar("translations", default=None)
)


def _translations() -> _gettext.NullTranslations:
    return _current.get() or _SOURCE


def gettext(message: str) -> str:
    """Return ``message`` in the language of the current request."""
    return _translations().gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """Return the singular or plural form that ``count`` needs."""
    return _translations().ngettext(singular, plural, count)
