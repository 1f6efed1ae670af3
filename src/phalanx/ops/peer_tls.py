"""A test certificate authority for peer TLS: `phalanx up --peer-tls-dir DIR` (and the chaos lab,
the benchmarks, the tests) make one CA and one certificate per node with the `cryptography`
package. For production, use your own PKI: the node config only needs the three file paths
(`peer_tls_cert_file`, `peer_tls_key_file`, `peer_tls_ca_file`).

Layout of DIR: `ca.pem` + `ca.key` (the CA), `<node>.pem` + `<node>.key` per node. Each node
certificate names the node id (common name and DNS subjectAltName: what the peer transport
checks, `phalanx.transport.tls`) and its host (an IP or DNS subjectAltName), for both TLS
server and client use. Existing files are kept (a second `phalanx up` reuses the CA); missing
node certificates are issued by the existing CA.

Rules of this file: private keys are written with mode 0600; nothing here is used by a node at
run time (it only reads the files).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Validity of the generated certificates.
VALIDITY_DAYS = 365


@dataclass(frozen=True, slots=True)
class NodeCertificate:
    """Where one node's peer TLS files are."""

    cert_file: str
    key_file: str
    ca_file: str

    def overrides(self) -> dict[str, str]:
        """The NodeConfig fields that turn peer TLS on with these files."""
        return {"peer_tls_cert_file": self.cert_file, "peer_tls_key_file": self.key_file,
                "peer_tls_ca_file": self.ca_file}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _write_cert(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_ca(directory: str | Path, name: str = "phalanx test CA") -> tuple[Path, Path]:
    """Create (or keep) `ca.pem` and `ca.key` in `directory`; their paths."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = root / "ca.pem", root / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    _write_cert(cert_path, certificate)
    return cert_path, key_path


def issue(directory: str | Path, node_id: str, hosts: Iterable[str] = (), *,
          ca_dir: str | Path | None = None, replace: bool = False) -> NodeCertificate:
    """Issue `<node_id>.pem` / `.key` in `directory`, signed by the CA of `ca_dir` (default:
    `directory`; created when missing), naming `node_id` and `hosts`. An existing pair is kept
    unless `replace`."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = make_ca(ca_dir if ca_dir is not None else root)
    cert_path, key_path = root / f"{node_id}.pem", root / f"{node_id}.key"
    result = NodeCertificate(str(cert_path), str(key_path), str(ca_cert_path))
    if cert_path.exists() and key_path.exists() and not replace:
        return result
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key_path}: not an EC private key (made by this module?)")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
    temporary_key = key_path.with_name(key_path.name + ".tmp")
    temporary_cert = cert_path.with_name(cert_path.name + ".tmp")
    _write_key(temporary_key, key)
    _write_cert(temporary_cert, certificate)
    os.replace(temporary_key, key_path)  # the key first: a reload between the two renames
    os.replace(temporary_cert, cert_path)  # fails (mismatch) and keeps the old pair
    return result


def make_cluster_certificates(directory: str | Path,
                              nodes: Iterable[tuple[str, str]]) -> dict[str, NodeCertificate]:
    """A CA in `directory` (kept if present) and a certificate per (node id, host)."""
    return {node_id: issue(directory, node_id, [host]) for node_id, host in nodes}
