"""Errors a user can act on; the command line prints them without a traceback."""


class TrainingError(Exception):
    """Base class: bad options, bad data or a failed export check."""


class DatasetError(TrainingError):
    """A data file is missing, malformed or inconsistent; the message names the file (and row)."""


class ExportError(TrainingError):
    """The exported ONNX model is invalid or disagrees with the PyTorch model."""
