"""Stand-in for mss's private XCB binding, as far as mss 10.2's conftest uses it:
``connect``/``disconnect`` (the test Xvfb runs with -noreset, so there is no reset
to inhibit), ``initialize`` and ``LIB.reset``."""


class _Lib:
    def reset(self) -> None:
        pass


LIB = _Lib()


def connect() -> tuple[None, None]:
    return None, None


def initialize() -> None:
    pass


def disconnect(_conn: object) -> None:
    pass
