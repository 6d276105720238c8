"""Errors a user can cause. The CLI and the GUI show their message as one line."""


class PoseError(Exception):
    """Base class: the message is written for the user, without a traceback."""


class InputError(PoseError):
    """A video, image or camera that cannot be used."""


class WeightsError(PoseError):
    """A weights file that is missing, truncated or not for this model."""


class ModelUnavailable(PoseError):
    """A model that is unknown or has no trained weights."""


class PublishedOnSuccess:
    """Context manager mixin for outputs written under a temporary name: `close()` publishes
    on a clean exit, `abort()` drops the file on any exception, KeyboardInterrupt included."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
