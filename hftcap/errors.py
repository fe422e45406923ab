"""The one exception family of hftcap: a message, at most one hint, an exit code."""


class HftcapError(Exception):
    def __init__(self, msg, hint=None, code=1):
        super().__init__(msg)
        self.msg = msg
        self.hint = hint
        self.code = code
