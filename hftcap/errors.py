"""Errors the CLI formats as one line plus at most one hint line."""


class HftcapError(Exception):
    def __init__(self, msg, hint=None, code=1):
        super().__init__(msg)
        self.msg = msg
        self.hint = hint
        self.code = code
