"""Operators and their sessions on the ground server: who may look, who may command.

- **Users** come from a TOML file the admin keeps (``sunlit-ground user add``), one table each,
  read again when it changes (a removed operator's sessions end at once)::

      [users.alice]
      role = "operator"                  # viewer | operator | admin
      password = "$argon2id$v=19$..."    # an argon2id hash (argon2-cffi), never the password

  Group and others must neither read nor write the file, mode 600 (else they could change who may
  command, or read the hashes and guess passwords offline), as ssh wants of a private key: the
  server refuses to start otherwise, naming the file and the ``chmod``; every bad key is named.
  ``save`` writes it mode 600.
- **Sessions** are random tokens (``secrets``, 256 bits) kept only as their SHA-256 in memory,
  with an idle and an absolute lifetime. A browser holds its token in an ``HttpOnly``,
  ``SameSite=Strict`` cookie and proves each state-changing request with the session's CSRF
  token in a header; a program (the CLI) sends the token as ``Authorization: Bearer``, which
  no other site's page can make a browser send, so it needs no CSRF token.
- **Logins** that fail are counted per user name and client address (an IPv6 client by its
  /64); after ``MAX_FAILURES`` in a row that name is locked for ``LOCKOUT_S`` from that address
  (guessing costs time; counted per name alone, anyone who could reach the server kept any
  operator, the admin too, locked out with a guess every 30 s), and after
  ``MAX_NAME_FAILURES`` from all addresses together, from every address (a guesser with many
  addresses is bounded too). Once a lock ends its count starts again, so holding an operator
  out costs that many guesses a lockout.
  Behind a proxy every client has the proxy's address: then it is per name again. A password changed in the users file ends the sessions opened with the
  old one, as removing the user does.

Roles are ordered: a viewer reads telemetry, events, the archive and the queue; an operator
also commands, approves others' commands, acknowledges alarms and holds or releases the
queue; an admin also cancels anyone's command.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import functools
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import tomli_w
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from flight import toml_text

LOCK_WAIT_S = 10.0  # how long `sunlit-ground user` waits for another one changing the users file
USER_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
MIN_PASSWORD = 8
MAX_FAILURES = 5
LOCKOUT_S = 30.0
MAX_NAME_FAILURES = 50  # failures in a row for a name from all addresses together: then locked from every one
SESSION_IDLE_S = 8 * 3600.0  # a shift
SESSION_MAX_S = 24 * 3600.0
MAX_SESSIONS = 1000  # a bound on memory: the oldest session goes first
MAX_SESSIONS_PER_USER = 20  # one user logging in again and again cannot push others out
MAX_TRACKED_NAMES = 10_000  # failed-login counts kept, oldest name first out
PARALLEL_CHECKS = 4  # argon2 checks at once: bounds the CPU and memory a login flood can take

_HASHER = PasswordHasher()  # argon2id with the library's current recommended cost


@functools.cache
def _dummy_hash() -> str:
    """A hash of no one's password: verifying an unknown user against it costs what a known one does (no timing
    oracle). Made when a :class:`Sessions` starts, not at import: every `sunlit-ground` command imports this
    module, and an argon2 hash costs it a tenth of a second or more."""
    return _HASHER.hash(secrets.token_hex(16))


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: Any, where: str = "role") -> Role:
        try:
            return cls[str(text).upper()]
        except KeyError:
            raise UserFileError(f"{where}: {text!r} is not a role; use viewer, operator or admin") from None


class UserFileError(ValueError):
    """The users file cannot be used; the message names the file and the key."""


class AuthError(PermissionError):
    """A login or a request that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str


@dataclass
class Session:
    user: str
    role: Role
    csrf: str
    created_s: float
    last_seen_s: float
    ended: bool = False
    password_hash: str = field(default="", repr=False)  # the user's at login: a change ends the session


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password: at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise UserFileError(f"user name {name!r}: lower-case letters, digits, '_', '.', '-', starting "
                            "with a letter, at most 32 characters")
    return name


class UserStore:
    """The users file, read at start and again when it changes (:meth:`refresh`)."""

    def __init__(self, path: Path | str, users: dict[str, User] | None = None, check_mode: bool = True):
        self.path = Path(path)
        self.users: dict[str, User] = users or {}
        self.check_mode = check_mode
        self.reload_error = ""
        self._stamp = self._file_stamp()
        self._checked_mono = time.monotonic()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def refresh(self, force: bool = False) -> None:
        """Read the file again if it changed (looked at most once a second): an operator
        removed, or given another role, is so at once, with no restart. A file that no longer
        reads keeps the users as they were, and ``reload_error`` says why."""
        now = time.monotonic()
        if now - self._checked_mono < 1.0 and not force:
            return
        self._checked_mono = now
        stamp = self._file_stamp()
        if stamp is None:  # gone (or its folder unreadable): said too, not only a file that does not read
            if self._stamp is not None:
                self._stamp = None  # read again whenever it is back
                self.reload_error = f"{self.path}: the users file is gone or cannot be looked at"
            return
        if stamp == self._stamp:
            return
        try:
            fresh = UserStore.load(self.path, check_mode=self.check_mode)
        except UserFileError as exc:
            self.reload_error = str(exc)
            return
        self.users, self._stamp, self.reload_error = fresh.users, stamp, ""

    @classmethod
    def load(cls, path: Path | str, *, check_mode: bool = True) -> UserStore:
        path = Path(path)
        try:
            st = path.stat()
            text = path.read_bytes()
        except FileNotFoundError:
            raise UserFileError(f"{path}: no users file; create one with "
                                f"`sunlit-ground user add NAME --role admin --users {path}`") from None
        except OSError as exc:
            raise UserFileError(f"{path}: cannot read the users file: {exc.strerror or exc}") from None
        if check_mode and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UserFileError(f"{path}: writable by group or others; anyone who can change it can command "
                                f"the spacecraft (chmod 600 {path})")
        if check_mode and st.st_mode & (stat.S_IRGRP | stat.S_IROTH):  # as ssh refuses a private key file
            raise UserFileError(f"{path}: mode {stat.S_IMODE(st.st_mode):03o} lets group or others read it; it holds "
                                f"the operators' password hashes, which whoever reads them can guess at offline "
                                f"(chmod 600 {path})")
        try:
            data = toml_text.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, toml_text.TOMLDecodeError) as exc:
            raise UserFileError(f"{path}: not valid TOML: {exc}") from None
        unknown = set(data) - {"users"}
        if unknown:
            raise UserFileError(f"{path}: unknown key {sorted(unknown)[0]!r}; the file holds [users.NAME] tables")
        table = data.get("users", {})
        if not isinstance(table, dict):
            raise UserFileError(f"{path}: 'users' must be a table of [users.NAME]")
        users = {}
        for name, entry in table.items():
            where = f"{path}: users.{name}"
            try:
                check_user_name(name)
            except UserFileError as exc:
                raise UserFileError(f"{path}: {exc}") from None
            if not isinstance(entry, dict):
                raise UserFileError(f"{where}: must be a table with role and password")
            extra = set(entry) - {"role", "password"}
            if extra:
                raise UserFileError(f"{where}.{sorted(extra)[0]}: unknown key (role, password)")
            if "role" not in entry or "password" not in entry:
                raise UserFileError(f"{where}: needs both role and password")
            role = Role.parse(entry["role"], f"{where}.role")
            digest = entry["password"]
            if not isinstance(digest, str) or not digest.startswith("$argon2"):
                raise UserFileError(f"{where}.password: must be an argon2 hash (`sunlit-ground user passwd {name}`)")
            users[name] = User(name, role, digest)
        return cls(path, users, check_mode)

    def save(self) -> None:
        """Write the file atomically (temp, fsync, rename); mkstemp makes it mode 600. An existing file
        keeps its owner (root editing the server's file, owned by the server's user, as vipw does)."""
        from flight.storage import write_atomic

        body = {"users": {u.name: {"role": u.role.name.lower(), "password": u.password_hash}
                          for u in sorted(self.users.values(), key=lambda u: u.name)}}
        text = "# Sunlit ground server operators; edit with `sunlit-ground user ...`\n" + tomli_w.dumps(body)
        try:
            owner = self.path.stat()
        except OSError:
            owner = None
        write_atomic(self.path, text.encode())
        if owner is not None and os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, os.getegid()):
            os.chown(self.path, owner.st_uid, owner.st_gid)

    @staticmethod
    @contextlib.contextmanager
    def locked(path: Path | str, wait_s: float | None = None) -> Iterator[None]:
        """Held while a change is read, made and written (``sunlit-ground user``): two admins' changes at once both
        stay (found in audit: each read the file, and the later write dropped the other's user). A lock file beside
        it (``.NAME.lock``, mode 600), as the file itself is replaced by each write; the server reads without it, as
        a write is a rename it never sees half done. UserFileError once ``wait_s`` (:data:`LOCK_WAIT_S`) passes;
        OSError where the lock file cannot be made (the file's folder cannot be written)."""
        path = Path(path)
        wait_s = LOCK_WAIT_S if wait_s is None else wait_s
        path.parent.mkdir(parents=True, exist_ok=True)
        # Given the users file's owner, as save() gives the file back (found in review: a lock file root made kept
        # that owner from changing the file after one `sudo`); mode 600, so no other user can hold it
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.geteuid() == 0:
                with contextlib.suppress(FileNotFoundError):
                    owner = path.stat()
                    if (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != (owner.st_uid, owner.st_gid):
                        os.fchown(fd, owner.st_uid, owner.st_gid)
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise UserFileError(f"{path}: another `sunlit-ground user` has been changing it for "
                                            f"{wait_s:g} s; try again once it ends") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # the lock goes with it

    def set(self, name: str, role: Role, password: str) -> None:
        check_user_name(name)
        self.users[name] = User(name, role, hash_password(password))

    def remove(self, name: str) -> None:
        if self.users.pop(name, None) is None:
            raise UserFileError(f"no user {name!r} in {self.path}")

    def verify(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        try:
            _HASHER.verify(user.password_hash if user else _dummy_hash(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user


class Sessions:
    """Logged-in sessions and failed-login counts; thread-safe; time from ``clock``."""

    def __init__(self, users: UserStore, clock: Callable[[], float] = time.time,
                 idle_s: float = SESSION_IDLE_S, max_s: float = SESSION_MAX_S):
        self.users = users
        self.clock = clock
        self.idle_s = idle_s
        self.max_s = max_s
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}  # SHA-256 of the token -> session
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}  # (name, address) -> (failures, locked until)
        self._checks = threading.BoundedSemaphore(PARALLEL_CHECKS)
        _dummy_hash()  # now, before any login: the first unknown name costs what any does
        self.logins = 0
        self.failed_logins = 0
        self.refused_requests = 0

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

    def login(self, name: str, password: str, address: str = "") -> tuple[str, Session]:
        """A new session's token (shown once) and the session; AuthError when refused. ``address``:
        the client's (the server's request.remote), which the lockout is kept per.

        Each attempt counts as a failure *before* the password is checked (and is taken back
        when it was right), so parallel guesses cannot get past the lockout; at most
        ``PARALLEL_CHECKS`` argon2 checks run at once (each takes tens of MiB on purpose).
        """
        if not isinstance(name, str) or not isinstance(password, str) or len(name) > 64 or len(password) > 1024:
            raise AuthError("give user and password as strings", 400)
        self.users.refresh()
        now = self.clock()
        key = (name, _client(address))
        everywhere = (name, "*")  # every address together: a guesser with many addresses is bounded too
        with self._lock:
            for k, limit in ((everywhere, MAX_NAME_FAILURES), (key, MAX_FAILURES)):
                count, until = self._failures.get(k, (0, 0.0))
                if until > now:
                    self.failed_logins += 1
                    raise AuthError(f"too many failed logins for {name!r}; try again in {until - now:.0f} s", 429)
            for k, limit in ((everywhere, MAX_NAME_FAILURES), (key, MAX_FAILURES)):
                count, until = self._failures.pop(k, (0, 0.0))
                if until:  # a lock that ended: its count starts again, so that holding an operator out costs that
                    count = 0  # many guesses a lockout, not one (found in audit: one from the same address relocked)
                count += 1
                self._failures[k] = (count, now + LOCKOUT_S if count >= limit else 0.0)
            while len(self._failures) > MAX_TRACKED_NAMES:  # bounded: the oldest names go, never all
                self._failures.pop(next(iter(self._failures)))
        with self._checks:
            user = self.users.verify(name, password)  # slow on purpose (argon2): outside the lock
        with self._lock:
            if user is None:
                self.failed_logins += 1
                raise AuthError("wrong user name or password")
            self._failures.pop(key, None)
            self._failures.pop(everywhere, None)
            token = secrets.token_urlsafe(32)
            session = Session(user.name, user.role, secrets.token_urlsafe(24), now, now,
                              password_hash=user.password_hash)
            self._sessions[self._key(token)] = session
            mine = [k for k, s in self._sessions.items() if s.user == user.name]
            for key in mine[:max(0, len(mine) - MAX_SESSIONS_PER_USER)]:  # a user's oldest go first
                self._sessions.pop(key).ended = True
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions))).ended = True
            self.logins += 1
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session for ``token``; refreshes its idle time. None if unknown or expired."""
        if not token:
            return None
        self.users.refresh()
        now = self.clock()
        key = self._key(token)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            user = self.users.users.get(session.user)  # None: removed from the file since
            if user is None or user.password_hash != session.password_hash or \
                    now - session.last_seen_s > self.idle_s or now - session.created_s > self.max_s:
                session.ended = True
                del self._sessions[key]
                return None
            session.role = user.role  # a role changed in the file applies at once
            session.last_seen_s = now
            return session

    def logout(self, token: str | None) -> None:
        if token:
            with self._lock:
                session = self._sessions.pop(self._key(token), None)
                if session is not None:
                    session.ended = True

    def alive(self, session: Session) -> bool:
        """Whether a session held by a long-lived connection (a WebSocket) may go on."""
        self.users.refresh()
        now = self.clock()
        user = self.users.users.get(session.user)
        if session.ended or now - session.created_s > self.max_s or user is None or \
                user.password_hash != session.password_hash:
            session.ended = True
            return False
        session.last_seen_s = now  # watching is activity
        return True

    def active(self) -> int:
        with self._lock:
            return len(self._sessions)


def _client(address: str | None) -> str:
    """What the login lockout is kept per: the client's IPv4 address, or its IPv6 /64 (one host
    commonly holds a whole /64, and would otherwise get five tries from each of its addresses)."""
    text = str(address or "")[:64]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def csrf_ok(session: Session, given: str | None) -> bool:
    # As bytes: compare_digest raises TypeError on a str with a character past ASCII (found in audit: a 500)
    return bool(given) and hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "surrogateescape"))


def default_token_path() -> Path:
    """Where ``sunlit-ground login`` keeps the CLI's session token (mode 600)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sunlit" / "ground-session.json"
