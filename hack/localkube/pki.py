"""Certificates and keys for a throw-away control plane (one CA, short-lived leaf certs)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_IP = "10.0.0.1"  # first address of --service-cluster-ip-range: the `kubernetes` Service


@dataclass(frozen=True)
class ClientIdentity:
    """Who a kubeconfig authenticates as: the cert's CN is the user, O the groups."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


# Each component gets its own identity so RBAC sees what a real cluster sees.
IDENTITIES = (
    ClientIdentity("admin", "kubernetes-admin", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    # kwok plays many kubelets at once; Node authorization would confine it to one node.
    ClientIdentity("kwok", "kwok-controller", ("system:masters",)),
    ClientIdentity("provisioner", "tauon:local-provisioner", ("system:masters",)),
    # How kube-apiserver authenticates to kubelets (the node agent): `kubectl logs` goes this way.
    ClientIdentity("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                   ("system:masters",)),
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def generate(pki_dir: Path, days: int = 7) -> None:
    """Writes ca.{crt,key}, apiserver.{crt,key}, <identity>.{crt,key} and sa.{key,pub}."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("tauon-local-ca")
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki_dir / "ca.key", ca_key)
    _write_cert(pki_dir / "ca.crt", ca)

    def leaf(stem: str, subject: x509.Name, usage, sans=None) -> None:
        key = _key()
        b = _builder(subject, ca_name, key.public_key(), days).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        _write_key(pki_dir / f"{stem}.key", key)
        _write_cert(pki_dir / f"{stem}.crt", b.sign(ca_key, hashes.SHA256()))

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    ips = ["127.0.0.1", SERVICE_IP]
    leaf(
        "apiserver",
        _name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips],
    )
    for ident in IDENTITIES:
        leaf(ident.name, _name(ident.user, ident.groups), ExtendedKeyUsageOID.CLIENT_AUTH)

    # Service-account tokens are signed with RSA, as kube-apiserver expects by default.
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki_dir / "sa.key", sa)
    (pki_dir / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig(pki_dir: Path, server: str, identity: str) -> str:
    """A kubeconfig (YAML text) for one identity, with file references to the certs."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: tauon-local
  cluster:
    server: {server}
    certificate-authority: {pki_dir / "ca.crt"}
users:
- name: {identity}
  user:
    client-certificate: {pki_dir / f"{identity}.crt"}
    client-key: {pki_dir / f"{identity}.key"}
contexts:
- name: tauon-local
  context:
    cluster: tauon-local
    user: {identity}
current-context: tauon-local
"""


def node_credentials(pki_dir: Path, node: str, days: int = 7) -> dict[str, Path]:
    """A kubelet's certificates for `node`, signed by the cluster CA: a client cert for
    `system:node:<node>` in `system:nodes` (so the Node authorizer and NodeRestriction apply) and a
    serving cert for its HTTPS endpoint on 127.0.0.1. Returns their paths."""
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    out = {}
    for stem, subject, usage, sans in (
        (f"node-{node}", _name(f"system:node:{node}", ("system:nodes",)),
         ExtendedKeyUsageOID.CLIENT_AUTH, None),
        (f"node-{node}-serving", _name(f"system:node:{node}", ("system:nodes",)),
         ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName(node), x509.DNSName("localhost"),
          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
    ):
        key = _key()
        b = _builder(subject, ca.subject, key.public_key(), days).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        _write_key(pki_dir / f"{stem}.key", key)
        _write_cert(pki_dir / f"{stem}.crt", b.sign(ca_key, hashes.SHA256()))
        out[stem.removeprefix(f"node-{node}").lstrip("-") or "client"] = pki_dir / stem
    return out


def webhook_ca_and_serving(pki_dir: Path, stem: str, ca_name: str, dns_names: list[str],
                           days: int = 3650) -> dict[str, bytes]:
    """A CA of a webhook server's own and a serving cert it signed for `dns_names` and
    127.0.0.1 (the API server calls the webhook on loopback), written as <stem>-ca.{crt,key}
    and <stem>.{crt,key}; returns them as a cert-controller Secret holds them (ca.crt, ca.key,
    tls.crt, tls.key).

    Its own CA, not the cluster's: the component is given the CA's key, and the cluster CA's key
    signs system:masters client certs. RSA in PKCS#1 and long-lived because that is what
    cert-controller (the rotator inside Kueue and other kubebuilder controllers) accepts
    and keeps instead of replacing: it parses the CA key as PKCS#1, verifies the CA for its own
    name and renews anything that expires within 90 days."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = _name(ca_name, (ca_name,))
    ca = (
        _builder(subject, subject, ca_key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, True, False, False, False), critical=True
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(ca_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [x509.DNSName(d) for d in dns_names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (
        _builder(_name(dns_names[0]), subject, key.public_key(), days)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pkcs1 = serialization.PrivateFormat.TraditionalOpenSSL  # "RSA PRIVATE KEY": PKCS#1
    out = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "ca.key": ca_key.private_bytes(serialization.Encoding.PEM, pkcs1,
                                       serialization.NoEncryption()),
        "tls.crt": leaf.public_bytes(serialization.Encoding.PEM),
        "tls.key": key.private_bytes(serialization.Encoding.PEM, pkcs1,
                                     serialization.NoEncryption()),
    }
    for name, data in out.items():
        path = pki_dir / {"ca.crt": f"{stem}-ca.crt", "ca.key": f"{stem}-ca.key",
                          "tls.crt": f"{stem}.crt", "tls.key": f"{stem}.key"}[name]
        path.write_bytes(data)
        if name.endswith(".key"):
            path.chmod(0o600)
    return out
