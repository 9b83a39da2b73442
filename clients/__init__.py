"""The Python client and the ``tollgate`` command line."""

import os

# gRPC core's own INFO lines (a failed TLS handshake, each retry) would stand beside the one-line errors the
# commands print; set before grpc is first imported. A caller's own GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
