"""User-creatable objects (QEMU's ``-object`` / ``object-add`` / ``object-del``).

qmpd has one object type, ``tls-creds-x509`` (QEMU 7.2 crypto/tlscredsx509.c): a
directory of PEM files and an endpoint, loaded at creation into an
:class:`ssl.SSLContext` that migration uses (qmpd/migration/tls.py).

Users: the CLI (``-object``, through :func:`parse_object`), the ``object-add`` /
``object-del`` handlers (qmpd/commands/objects.py), and the migration manager, which
looks ``tls-creds`` up in the :class:`ObjectStore` when a migration starts. Errors are
:class:`qmpd.errors.ConfigError` with QEMU 7.2's texts.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Literal

from qmpd.errors import ConfigError
from qmpd.options import keyval

Endpoint = Literal["server", "client"]

#: QEMU's file names in ``dir`` (crypto/tlscredsx509.h)
CA_CERT = "ca-cert.pem"
SERVER_CERT, SERVER_KEY = "server-cert.pem", "server-key.pem"
CLIENT_CERT, CLIENT_KEY = "client-cert.pem", "client-key.pem"

#: properties of QEMU 7.2's tls-creds-x509 that qmpd does not implement
UNSUPPORTED = ("sanity-check", "passwordid", "priority", "loaded")
KNOWN_TYPES = ("tls-creds-x509",)


class ObjectError(ConfigError):
    """An object cannot be created or deleted; ``str()`` is QEMU 7.2's text."""


def _path(directory: str, name: str, required: bool) -> str | None:
    """QEMU's ``qcrypto_tls_creds_get_path``: the file, None if optional and absent."""
    path = os.path.join(directory, name)
    if os.access(path, os.R_OK):
        return path
    err = OSError()
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        err = exc
    if required or not isinstance(err, FileNotFoundError):
        raise ObjectError(f"Unable to access credentials {path}: "
                          f"{err.strerror or 'Permission denied'}")
    return None


@dataclass(frozen=True)
class TlsCredsX509:
    """A loaded ``tls-creds-x509``: ``context`` is ready for one endpoint's sessions."""

    id: str
    dir: str
    endpoint: Endpoint
    verify_peer: bool
    context: ssl.SSLContext

    @classmethod
    def load(cls, obj_id: str, directory: str | None, endpoint: Endpoint,
             verify_peer: bool) -> TlsCredsX509:
        """Check and load the files as QEMU's ``qcrypto_tls_creds_x509_load``.

        :raise ObjectError: ``Missing 'dir' property value``, ``Unable to access
            credentials PATH: REASON``, ``Cannot load ...`` for a file OpenSSL refuses.
        """
        if not directory:
            raise ObjectError("Missing 'dir' property value")
        server = endpoint == "server"
        ca = _path(directory, CA_CERT, True)
        if server:
            cert = _path(directory, SERVER_CERT, True)
            key = _path(directory, SERVER_KEY, True)
        else:
            cert = _path(directory, CLIENT_CERT, False)
            key = _path(directory, CLIENT_KEY, False)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as err:
            raise ObjectError(f"Cannot load CA certificate '{ca}': {_reason(err)}") from err
        if cert is not None and key is None:
            raise ObjectError(f"Cert '{cert}' without corresponding key")
        if key is not None and cert is None:
            raise ObjectError(f"Key '{key}' without corresponding cert")
        if cert is not None and key is not None:
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as err:
                raise ObjectError(f"Cannot load certificate '{cert}' & key '{key}': "
                                  f"{_reason(err)}") from err
        if server:
            ctx.verify_mode = ssl.CERT_REQUIRED if verify_peer else ssl.CERT_NONE
            ctx.num_tickets = 0  # no post-handshake messages in the migration stream
        else:
            ctx.check_hostname = verify_peer
            ctx.verify_mode = ssl.CERT_REQUIRED if verify_peer else ssl.CERT_NONE
        return cls(obj_id, directory, endpoint, verify_peer, ctx)


def _reason(err: Exception) -> str:
    if isinstance(err, ssl.SSLError):
        return str(err.reason or err)
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)


def _bool(props: dict[str, object], key: str, default: bool) -> bool:
    value = props.get(key, default)
    if isinstance(value, bool):
        return value
    if value in ("on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    raise ObjectError(f"Parameter '{key}' expects 'on' or 'off'")


class ObjectStore:
    """The objects by id (QEMU's ``/objects`` container)."""

    def __init__(self) -> None:
        self._objects: dict[str, TlsCredsX509] = {}

    def add(self, qom_type: str, obj_id: str, props: dict[str, object]) -> TlsCredsX509:
        """``object-add`` / ``-object``: ``props`` are the type's properties (QMP values,
        or the strings of the command line).

        :raise ObjectError: QEMU 7.2's texts; nothing is added then.
        """
        if qom_type not in KNOWN_TYPES:
            raise ObjectError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
        for key in props:
            if key in UNSUPPORTED:
                raise ObjectError(f"Property '{key}' of tls-creds-x509 is not supported "
                                  "by qmpd")
            if key not in ("dir", "endpoint", "verify-peer"):
                raise ObjectError(f"Parameter '{key}' is unexpected")
        endpoint = props.get("endpoint", "client")
        if endpoint not in ("server", "client"):
            raise ObjectError(f"Parameter 'endpoint' does not accept value '{endpoint}'")
        directory = props.get("dir")
        if directory is not None and not isinstance(directory, str):
            raise ObjectError("Parameter 'dir' expects string")
        verify = _bool(props, "verify-peer", True)
        creds = TlsCredsX509.load(obj_id, directory, endpoint, verify)
        if obj_id in self._objects:
            raise ObjectError(f"attempt to add duplicate property '{obj_id}' to object "
                              "(type 'container')")
        self._objects[obj_id] = creds
        return creds

    def delete(self, obj_id: str) -> None:
        """``object-del``. :raise ObjectError: ``object 'ID' not found``."""
        if self._objects.pop(obj_id, None) is None:
            raise ObjectError(f"object '{obj_id}' not found")

    def get(self, obj_id: str) -> TlsCredsX509 | None:
        """The object named ``obj_id``, or None."""
        return self._objects.get(obj_id)

    def __contains__(self, obj_id: object) -> bool:
        return obj_id in self._objects


def parse_object(text: str) -> tuple[str, str, dict[str, object]]:
    """``-object TYPE,id=ID,key=value,...`` -> (type, id, properties as strings).

    :raise ObjectError: no type or no id, with QEMU's texts.
    """
    opts: dict[str, object] = dict(keyval(
        text, ("id", "dir", "endpoint", "verify-peer", *UNSUPPORTED), implied="qom-type"))
    qom_type = str(opts.pop("qom-type", ""))
    if not qom_type:
        raise ObjectError("Parameter 'qom-type' is missing")
    obj_id = opts.pop("id", None)
    if not obj_id:
        raise ObjectError("Parameter 'id' is missing")
    return qom_type, str(obj_id), dict(opts)



def check_object(text: str) -> str:
    """``-object`` on the command line: the syntax checked, the text kept (the VM stack
    creates the object). :raise ObjectError: as :func:`parse_object`."""
    parse_object(text)
    return text
