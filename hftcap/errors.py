"""hftcap errors: one exception family; the CLI formats them as one line + at most one hint."""


class HftcapError(Exception):
    def __init__(self, msg, hint=None, code=1):
        super().__init__(msg)
        self.msg = msg
        self.hint = hint
        self.code = code
