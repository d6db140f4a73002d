"""kubesim: a test-only Kubernetes API server that real clients talk to over HTTP.

The real ``kubectl``, the kubernetes Python client and kopf connect to it like to
any API server: discovery, CRUD, patches, the status subresource, finalizers,
ownerReference garbage collection, watches with resume and bookmarks, Table
output with a CRD's printer columns, OpenAPI v3 for ``kubectl apply``,
structural-schema validation, pruning, defaulting and CEL rules. Where it is
not faithful it refuses loudly (HTTP 501 with a Status body) rather than
accepting silently: a lenient emulator hides the bugs it exists to catch.

Start: ``python -m kubesim --port N --kubeconfig FILE`` (tests/ on the path) or
``make kubesim PORT=N KUBECONFIG_OUT=FILE``.
"""
