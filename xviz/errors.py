"""Exception types, one per failure family, with messages a user can act on."""


class XvizError(Exception):
    """Base class of every error xviz raises on purpose."""


class WeightsError(XvizError):
    """Weights could not be found, downloaded, verified or loaded."""


class ImageError(XvizError):
    """An input could not be read as an image or breaks the input limits."""


class AnalysisError(XvizError):
    """An analysis, attribution or ablation could not be computed."""


class Cancelled(XvizError):
    """A long computation was cancelled by its caller."""


class AtlasError(XvizError):
    """A dataset atlas could not be built, or a directory is not a complete xviz atlas."""


def short(value: object, limit: int = 80) -> str:
    """``repr``-like text of ``value`` (an exception: its type and message) at most ``limit``
    characters long: for echoing what a client sent into a message or a log line."""
    text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else repr(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text):,} characters)"
