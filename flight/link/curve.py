"""CurveZMQ for the ZeroMQ links: when it is on, its key files, and making them.

With CURVE on, the agent's ROUTER and XPUB are CURVE servers (every byte encrypted, the
server proven by its key) and a ZAP handler (pyzmq's ``ThreadAuthenticator``) lets in only
clients whose public key is in a directory of certificates: the allow-list. Everything here
is pyzmq's own (``zmq.auth``): certificates as ``zmq.auth.create_certificates`` writes them,
``NAME.key`` (public) and ``NAME.key_secret`` (both keys; mode 600, refused otherwise); an allow-list
that others may write to is refused too.

:func:`curve_wanted` decides ``zmq_curve = "auto"``: on, except for an ipc link or one whose
host is a loopback address (127.0.0.0/8, ::1, ``localhost``), where nothing off the board
can reach the sockets. Serial links have no CURVE.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import struct
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.utils import z85

from flight.link.interface import CurveKeys
from flight.storage import fsync_path

CURVE_SETTINGS = ("auto", "on", "off")
MAKE_KEYS_HINT = "make a pair with `sunlit-flight zmq-keys DIR NAME` (pyzmq's zmq.auth certificates)"


class CurveKeyError(ValueError):
    """A CURVE key file or directory that cannot be used; the text names the file and why."""


def is_loopback_url(url: str) -> bool:
    """Whether a ZeroMQ link URL stays on this machine: ipc, or a loopback host."""
    parts = urlsplit(url)
    if parts.scheme in ("zmq+ipc", "ipc"):
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name (other than localhost), '*' or nothing: may be reached from off the board
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def curve_wanted(url: str, setting: str = "auto") -> bool:
    """Whether a link ``url`` runs CurveZMQ under the setting ``zmq_curve`` (auto | on | off)."""
    if setting not in CURVE_SETTINGS:
        raise ValueError(f"zmq_curve: {setting!r} is not one of {', '.join(CURVE_SETTINGS)}")
    if urlsplit(url).scheme not in ("zmq", "tcp", "zmq+ipc", "ipc"):
        return False  # serial: no CURVE
    if setting == "auto":
        return not is_loopback_url(url)
    return setting == "on"


def plain_off_board(url: str, setting: str) -> bool:
    """Whether ``zmq_curve = "off"`` leaves a link plain where "auto" would have turned CURVE on: a TCP link
    on an address off-board hosts may reach (0.0.0.0, a LAN address, a host name). Allowed, as a bench may
    want it, but said at start (found in audit: an agent bound to 0.0.0.0 with CURVE off said nothing)."""
    return curve_wanted(url, "auto") and not curve_wanted(url, setting)


def _check_key(key: bytes | None, path: Path, what: str) -> bytes:
    if key is None or len(key) != 40:
        raise CurveKeyError(f"{path}: no {what} key of 40 Z85 characters")
    try:
        z85.decode(key)
    except (ValueError, KeyError, IndexError, TypeError, struct.error):
        raise CurveKeyError(f"{path}: the {what} key is not Z85 text") from None
    return key


def _load_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """pyzmq's reading of a certificate, every failure of it a CurveKeyError naming the file (found in audit: a
    ``public-key`` line without ``=`` raised IndexError out of pyzmq, a traceback at the agent's or ground's start)."""
    try:
        return zmq.auth.load_certificate(path)
    except IndexError:
        raise CurveKeyError(f"{path}: a public-key or secret-key line without '= \"KEY\"'; {MAKE_KEYS_HINT}") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CurveKeyError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None


def load_public(path: Path | str) -> bytes:
    """The public key of a certificate file (``NAME.key`` or ``NAME.key_secret``)."""
    path = Path(path)
    if not path.is_file():
        raise CurveKeyError(f"{path}: no such certificate file; {MAKE_KEYS_HINT}")
    public, _secret = _load_certificate(path)
    return _check_key(public, path, "public")


def load_secret(path: Path | str) -> tuple[bytes, bytes]:
    """(public, secret) of a secret certificate (``NAME.key_secret``); refused if others may read it."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise CurveKeyError(f"{path}: {exc.strerror or exc}; {MAKE_KEYS_HINT}") from None
    if not path.is_file():
        raise CurveKeyError(f"{path}: not a file")
    if st.st_mode & 0o077:
        raise CurveKeyError(f"{path}: mode {st.st_mode & 0o777:o}, readable by others; chmod 600 it")
    public, secret = _load_certificate(path)
    public = _check_key(public, path, "public")
    secret = _check_key(secret, path, "secret")
    if zmq.curve_public(secret) != public:
        raise CurveKeyError(f"{path}: the secret key does not belong to the public key beside it")
    return public, secret


def _refuse_writable_by_others(path: Path) -> None:
    """The allow-list says who may connect: one that any user may write to lets any user in (at the
    agent's next start; found in audit: a clients directory of mode 777 was taken without a word)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reading it says why
    if mode & 0o002:
        raise CurveKeyError(f"{path}: mode {mode & 0o7777:o}, writable by others, who could list their own key; "
                            "chmod o-w it")


def load_allowed(directory: Path | str) -> dict[bytes, Path]:
    """The allow-list: public key -> certificate file, for every ``*.key`` in ``directory`` that the
    ZAP handler reads: not a hidden one (pyzmq's ``glob.glob`` skips them; found in audit: a list of
    only ``.ground.key`` passed this check, and the agent started letting nobody in)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CurveKeyError(f"{directory}: not a directory of client certificates (*.key); {MAKE_KEYS_HINT}")
    try:
        files = sorted(f for f in directory.glob("*.key") if not f.name.startswith("."))
    except OSError as exc:
        raise CurveKeyError(f"{directory}: {exc.strerror or exc}") from None
    for path in (directory, *files):
        _refuse_writable_by_others(path)
    allowed = {load_public(f): f for f in files}
    if not allowed:
        raise CurveKeyError(f"{directory}: no client certificate (*.key): no ground could connect")
    return allowed


def server_keys(secret_file: Path | str, clients_dir: Path | str) -> CurveKeys:
    """The agent's keys: its own secret certificate and the directory of allowed clients."""
    public, secret = load_secret(secret_file)
    load_allowed(clients_dir)
    return CurveKeys(public, secret, allowed_dir=Path(clients_dir))


def client_keys(server_public_file: Path | str, client_secret_file: Path | str) -> CurveKeys:
    """A ground end's keys: the agent's public certificate and its own secret one."""
    server_public = load_public(server_public_file)
    public, secret = load_secret(client_secret_file)
    return CurveKeys(public, secret, server_public=server_public)


def make_certificate(directory: Path | str, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, 644) and ``NAME.key_secret`` (600) into ``directory``.

    zmq.auth.create_certificates writes them into a private temporary directory first, so
    the secret is never readable by others, not even for a moment; an existing pair is kept. Both are fsync'd
    before their renames and the directory after, as install.sh does (found in audit: nothing was synced, and a
    power cut soon after could leave an empty certificate that refuses to be made again)."""
    directory = Path(directory)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"{name!r}: a certificate name is a plain file name")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise FileExistsError(f"{public} or {secret} exists already; remove both to make new keys")
    staging = Path(tempfile.mkdtemp(prefix=".curve-", dir=directory))  # mode 700
    try:
        made_public, made_secret = (Path(p) for p in zmq.auth.create_certificates(staging, name))
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
        fsync_path(made_secret)
        fsync_path(made_public)
        os.replace(made_secret, secret)
        os.replace(made_public, public)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_path(directory)
    return public, secret
