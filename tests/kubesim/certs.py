"""A throw-away PKI for kubesim over HTTPS (what in-cluster clients require): a CA and a
server certificate for the given IP addresses, made with the openssl command."""

from __future__ import annotations

import subprocess
from pathlib import Path


def certificates(directory: Path, *, ips: list[str]) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) files in ``directory``."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=kubesim-ca",
    )
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=kubesim")
    san = directory / "san.cnf"
    san.write_text("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips) + "\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(san),
    )
    return ca, cert, key
