"""The weir.dev API: the one package both the operator and the node agent share.

Everything a user writes (TracingPolicy, AggregationRule) and everything the
system writes back (NodeReport, the status of each object) is a pydantic model
here. The CRDs in ``crds/`` are generated from these models, so the field
descriptions below are what ``kubectl explain`` shows.

This package is pure: it imports no kopf, no bcc, no prometheus_client and no
Kubernetes client (an import-linter contract checks it).
"""

from typing import Final

GROUP: Final = "weir.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "weir.dev/v1alpha1"
CATEGORY = "weir"
