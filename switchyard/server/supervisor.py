"""`switchyard serve`'s process supervisor: uvicorn's, except that SIGHUP reloads the config in
every worker (passed on to each) instead of replacing the workers, so their connections, caches,
breakers and loaded local model survive a reload."""

from __future__ import annotations

import os
import signal

from uvicorn.supervisors.multiprocess import Multiprocess


class Supervisor(Multiprocess):
    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGHUP)
                except ProcessLookupError:
                    pass  # it just died: its replacement reads the new file anyway
