"""User-facing errors: the CLI prints their message and exits 2, without a traceback."""


class CnnlabError(Exception):
    """A problem the user can fix (bad config, bad data); the message says how."""


class ConfigError(CnnlabError):
    """An invalid experiment file or override; the message names the dotted key."""


class DataError(CnnlabError):
    """Data that cannot be used as configured; the message names the file or class."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: still a KeyboardInterrupt, with where the run can continue from.
    `epoch` is the last epoch its checkpoint holds (0: none yet, --resume starts it again)."""

    def __init__(self, folder: str, epoch: int):
        super().__init__(f"{folder}: interrupted after epoch {epoch}")
        self.folder, self.epoch = folder, epoch
