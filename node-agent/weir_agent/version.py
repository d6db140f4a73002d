"""The agent's version, as reported in metrics and NodeReports."""

from importlib import metadata

try:
    VERSION = metadata.version("weir")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"
