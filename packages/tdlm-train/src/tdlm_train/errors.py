"""The one exception type the apps turn into a single line and a non-zero exit.

Raise :class:`UserError` for anything the user can fix (a missing corpus, a bad flag, a corrupt
checkpoint, a tree built for another tokenizer): the message is one sentence naming the file or
flag and what was expected. Everything else is a bug and keeps its traceback.
"""

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user: reported as ``error: <message>`` with exit status 2."""
