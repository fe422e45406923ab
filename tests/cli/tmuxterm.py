"""A real terminal for tests: a command in a detached tmux session of a given size.

Each TmuxTerm runs its own tmux server (`tmux -L <unique socket> -f /dev/null`), so tests never
touch a user's sessions, and `close()` kills that server (and with it the command) on every path:

    with TmuxTerm("python -m tui_fake", width=80, height=24) as term:
        term.wait_for("latency per hop", timeout=10)
        term.send("/", "MSFT", "Enter")
        screen = term.capture()
        term.send("q")
        assert term.wait_exit(5) == (0, True)      # exit status 0, terminal settings restored
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time

from bounds import bound
import uuid
from typing import Callable, Mapping, Optional, Sequence, Union


class TmuxError(AssertionError):
    pass


def have_tmux() -> bool:
    return shutil.which("tmux") is not None


class TmuxTerm:
    def __init__(self, command: Union[str, Sequence[str]], *, width: int = 80, height: int = 24,
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None):
        self.command = command if isinstance(command, str) else shlex.join(command)
        self.width, self.height = width, height
        self.socket = f"hftcap-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.session = "t"
        self.env = dict(env or {})
        self.cwd = cwd
        self._started = False

    # -- tmux plumbing -------------------------------------------------------------------------
    def tmux(self, *args: str, check: bool = True) -> str:
        p = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                           capture_output=True, text=True, timeout=bound(10))
        if check and p.returncode != 0:
            raise TmuxError(f"tmux {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def start(self) -> "TmuxTerm":
        env = dict(os.environ)
        env.pop("TMUX", None)          # a test run from inside tmux still gets its own server
        env.update(self.env)
        # tmux gives the window the environment of the client that started the server (this
        # process, with env applied). The command runs under sh, which records the terminal
        # settings first and reports the exit status and whether the settings came back. Its
        # INT trap keeps it alive through Ctrl-C (the command gets SIGINT with its usual action).
        script = (f'trap : INT; before=$(stty -g); {self.command}\nrc=$?; '
                  f'if [ "$(stty -g)" = "$before" ]; then t=restored; else t=changed; fi; '
                  f'echo "[tmuxterm exit=$rc tty=$t]"')
        args = ["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d",
                "-s", self.session, "-x", str(self.width), "-y", str(self.height)]
        if self.cwd:
            args += ["-c", self.cwd]
        args.append("sh -c " + shlex.quote(script))
        p = subprocess.run(args, capture_output=True, text=True, timeout=bound(10), env=env)
        if p.returncode != 0:
            raise TmuxError(f"tmux new-session: exit {p.returncode}: {p.stderr.strip()}")
        self._started = True
        self.tmux("set-option", "-t", self.session, "status", "off")
        # keep the pane after the command exits: its last screen and the exit line stay
        self.tmux("set-option", "-w", "-t", self.session, "remain-on-exit", "on")
        self.tmux("resize-window", "-t", self.session, "-x", str(self.width),
                  "-y", str(self.height), check=False)
        return self

    def close(self) -> None:
        if self._started:
            path = self.tmux("display-message", "-p", "#{socket_path}", check=False).strip()
            self.tmux("kill-server", check=False)
            self._started = False
            if path and os.path.basename(path) == self.socket:
                try:
                    os.unlink(path)       # tmux leaves its socket file behind
                except FileNotFoundError:
                    pass

    def __enter__(self) -> "TmuxTerm":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what tests use ------------------------------------------------------------------------
    def size(self) -> tuple:
        out = self.tmux("display-message", "-p", "-t", self.session,
                        "#{pane_width} #{pane_height}")
        w, h = out.split()
        return int(w), int(h)

    def send(self, *keys: str) -> None:
        """tmux key names ('Enter', 'Tab', 'Escape', 'C-c') or literal text, one argument each."""
        for k in keys:
            if re.fullmatch(r"Enter|Tab|Escape|BSpace|Space|Up|Down|Left|Right|C-[a-z]", k):
                self.tmux("send-keys", "-t", self.session, k)
            else:
                self.tmux("send-keys", "-t", self.session, "-l", k)

    def capture(self, history: bool = False, escapes: bool = False) -> str:
        """The visible screen, one line per row, trailing spaces removed; with `history`, the
        scrollback too (tmux appends "Pane is dead" when the command exits, which scrolls the
        screen by one line); with `escapes`, the SGR sequences for colours and attributes."""
        extra = (["-S", "-"] if history else []) + (["-e"] if escapes else [])
        return self.tmux("capture-pane", "-p", *extra, "-t", self.session)

    def lines(self) -> list:
        return self.capture().split("\n")[: self.height]

    def alternate_on(self) -> bool:
        """Whether the pane shows the alternate screen (a full-screen program is drawing)."""
        out = self.tmux("display-message", "-p", "-t", self.session, "#{alternate_on}")
        return out.strip() == "1"

    def wait_for(self, what: Union[str, re.Pattern, Callable[[str], bool]],
                 timeout: float = 10.0, interval: float = 0.1) -> str:
        """Poll the screen until it contains `what` (text, regex or predicate); return it."""
        if isinstance(what, str):
            pred = lambda s: what in s                                    # noqa: E731
        elif isinstance(what, re.Pattern):
            pred = lambda s: what.search(s) is not None                   # noqa: E731
        else:
            pred = what
        limit = bound(timeout)                 # scaled to the machine (tests/bounds.py)
        deadline = time.monotonic() + limit
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if pred(screen):
                return screen
            time.sleep(interval)
        raise TmuxError(f"timed out after {limit:.1f}s waiting for {what!r}; screen:\n{screen}")

    def exit_report(self) -> Optional[tuple]:
        """(exit status, terminal restored?) once the command has exited, else None."""
        m = re.search(r"\[tmuxterm exit=(\d+) tty=(restored|changed)\]", self.capture(history=True))
        return (int(m.group(1)), m.group(2) == "restored") if m else None

    def wait_exit(self, timeout: float = 5.0) -> tuple:
        """Wait for the command to exit; (exit status, terminal settings restored?)."""
        limit = bound(timeout)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            rep = self.exit_report()
            if rep is not None:
                return rep
            time.sleep(0.05)
        raise TmuxError(f"command still running after {limit:.1f}s; screen:\n{self.capture()}")
