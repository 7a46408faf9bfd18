"""The errors a user's input or config causes. Jobs show them as one `error: ...` line and exit 2
(`raycluster.app.cli`); anything else is a bug and keeps its traceback. Bottom of the import
graph: imports nothing from raycluster."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key and why."""


class EmbeddingWidthError(ValueError):
    """Embeddings do not have the width a model or index expects."""


class ShardNotFoundError(FileNotFoundError):
    """One or more shards named by the data config do not exist."""


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model it is loaded into."""
