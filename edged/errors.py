"""One error hierarchy: every problem a user can act on is an EdgedError whose message says what to do."""

from __future__ import annotations

from typing import Optional, Union

CorrelationId = Union[str, int, None]

NO_TENSORFLOW = ("{job} needs TensorFlow, which is not installed here: pip install 'edged[train]' "
                 "(the knn head keeps learning without it)")


class EdgedError(Exception):
    """Base class: the message names the bad key, payload, file or state."""


class ConfigError(EdgedError):
    """A config file or override that cannot be used; the message names the key path."""


class SourceError(EdgedError):
    """The frame source cannot be opened or was lost."""


class EngineError(EdgedError):
    """No usable interpreter, or a model that cannot be loaded."""


class BackboneError(EdgedError):
    """A backbone that cannot be resolved, built or loaded."""


class StoreError(EdgedError):
    """The example store cannot read or write what was asked."""


class VersionError(EdgedError):
    """A model or head version that does not exist or cannot be switched to."""


class HeadError(EdgedError):
    """A head that cannot learn, load or predict with what it was given."""


class TrainingError(EdgedError):
    """Training or export cannot start or went wrong."""


class CommandError(EdgedError):
    """A command payload that was refused; carries the correlation id for the reply."""

    def __init__(self, message: str, corr_id: CorrelationId = None):
        super().__init__(message)
        self.corr_id: Optional[CorrelationId] = corr_id
