"""A container's terminal held by the caller: with process.terminal and no --console-socket, `capsa
run` and `capsa exec` hold the pty master themselves and copy between it and their own stdio, as
runc does for an interactive `runc run`. A Python program can do the same.

    proxy = TerminalProxy()
    container = Container.create(root, id, bundle, console_fd=proxy.child_end)
    proxy.receive_master()          # the container's pty master, sent over the socketpair
    container.start()
    proxy.copy_until_exit()         # stdin -> pty, pty -> stdout, until the container closes it

Loaded only for a container with a terminal.
"""

from __future__ import annotations

import posix


class TerminalProxy:
    def __init__(self):
        import _socket

        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        self.our_end = ours.detach()
        self.child_end = theirs.detach()  # create's or exec's console_fd: the init sends the master on it
        self.master = -1
        self.saved_mode = None

    def receive_master(self) -> None:
        """Take the pty master the container's process sent; put our own terminal (if stdin is
        one) in raw mode and give its size to the container's."""
        from capsa import console

        posix.close(self.child_end)
        self.master = console.receive_fd(self.our_end)
        posix.close(self.our_end)
        if posix.isatty(0):
            import termios
            import tty

            self.saved_mode = termios.tcgetattr(0)
            tty.setraw(0)
            size = posix.get_terminal_size(0)
            console.set_size(self.master, {"height": size.lines, "width": size.columns})

    def copy_until_exit(self) -> None:
        """Copy stdin to the pty and the pty to stdout until every slave end is closed (the
        container's processes have exited); then restore our terminal's mode."""
        import select

        sources = [self.master, 0]
        try:
            while True:
                try:
                    readable, _, _ = select.select(sources, [], [])
                except InterruptedError:
                    continue
                if self.master in readable:
                    try:
                        data = posix.read(self.master, 65536)
                    except OSError:  # EIO: every slave end is closed, the container is gone
                        data = b""
                    if not data:
                        break
                    posix.write(1, data)
                if 0 in readable:
                    data = posix.read(0, 65536)
                    if data:
                        posix.write(self.master, data)
                    else:
                        sources.remove(0)
        finally:
            if self.saved_mode is not None:
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, self.saved_mode)
