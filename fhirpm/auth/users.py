"""Users who log in at the authorization server: argon2 password hashes, lockout, fhirUser.

A user links to the FHIR resource that represents them (`fhirUser`: Practitioner, Patient,
RelatedPerson, ...), which decides the patient a standalone launch binds to. Repeated
failed logins lock the account (even against the right password) for a while; unknown
usernames are counted and hashed against too, so timing and messages do not reveal which
accounts exist.

An admin user may be granted `fhirpm/admin` (the admin API); an admin is never linked to
a Patient or RelatedPerson. A disabled user cannot sign in, and every flow treats them as
unknown (`Users.get` does not return them); only the administration reads them (`load`).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fhirpm.auth.records import LOCKOUTS, USERS, AuthDocs, Record
from fhirpm.config import AuthSettings
from fhirpm.errors import Category, FhirError

USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
FHIR_USER = re.compile(
    r"^(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}$")
_NOT_ADMIN_TYPES = ("Patient", "RelatedPerson")  # patient-side users never administer


@dataclass(frozen=True, slots=True)
class User:
    username: str
    fhir_user: str | None = None
    name: str | None = None
    admin: bool = False
    disabled: bool = False

    @property
    def fhir_user_type(self) -> str | None:
        return self.fhir_user.split("/", 1)[0] if self.fhir_user else None

    @property
    def may_administer(self) -> bool:
        """May be granted fhirpm/admin."""
        return self.admin and not self.disabled and self.fhir_user_type not in _NOT_ADMIN_TYPES

    def public(self) -> dict[str, Any]:
        return {"username": self.username, "fhirUser": self.fhir_user, "name": self.name,
                "admin": self.admin, "disabled": self.disabled}


def check_user(user: User) -> User:
    """`user` validated (new, or changed by an administrator)."""
    if not USERNAME.match(user.username):
        raise FhirError(Category.VALUE, "A username is 1-64 letters, digits or ._@+-")
    if user.fhir_user is not None and not FHIR_USER.match(user.fhir_user):
        raise FhirError(Category.VALUE,
                        "fhirUser must be a reference like Practitioner/123 or Patient/7")
    if user.name is not None and len(user.name) > 200:
        raise FhirError(Category.VALUE, "name is longer than 200 characters")
    if user.admin and user.fhir_user_type in _NOT_ADMIN_TYPES:
        raise FhirError(Category.VALUE, f"an admin cannot be a {user.fhir_user_type} user")
    return user


def check_password(password: str) -> str:
    if len(password) < 8:
        raise FhirError(Category.VALUE, "A password needs at least 8 characters")
    if len(password) > 1024:
        raise FhirError(Category.VALUE, "A password has at most 1024 characters")
    return password


class LoginFailed(Exception):
    """Wrong credentials or a locked account; the message is safe to show."""


class Users:
    def __init__(self, docs: AuthDocs, settings: AuthSettings) -> None:
        self.docs = docs
        self.settings = settings
        self.hasher = PasswordHasher(time_cost=settings.argon2_time_cost,
                                     memory_cost=settings.argon2_memory_kib, parallelism=1)
        self._dummy: str | None = None

    async def add(self, username: str, password: str, *, fhir_user: str | None = None,
                  name: str | None = None, admin: bool = False,
                  disabled: bool = False) -> User:
        user = check_user(User(username, fhir_user, name, admin, disabled))
        hashed = await asyncio.to_thread(self.hasher.hash, check_password(password))
        body = {**user.public(), "password_hash": hashed, "created": int(time.time()),
                "created_at": time.time()}
        if not await self.docs.create(USERS, username, body):
            raise FhirError(Category.CONFLICT, f"User {username!r} already exists")
        return user

    async def get(self, username: str) -> User | None:
        """An enabled user (what every flow uses: a disabled one is unknown)."""
        found = await self.load(username)
        return found[0] if found and not found[0].disabled else None

    async def load(self, username: str) -> tuple[User, Record] | None:
        """A user in any state, with the record to compare-and-swap against."""
        if not USERNAME.match(username):
            return None
        record = await self.docs.get(USERS, username)
        return (user_from_record(record.body), record) if record else None

    async def signed_in(self, username: str, at: float | None) -> bool:
        """Whether a sign-in at `at` (epoch seconds) still counts: the user is enabled and
        was not created (again), disabled or given a new password since."""
        found = await self.load(username)
        if found is None or found[0].disabled or at is None:
            return False
        body = found[1].body
        return at > max(body.get("created_at", 0), body.get("signed_out", 0))

    async def replace(self, record: Record, user: User, password: str | None = None) -> bool:
        """Store a changed user unless someone changed it since `record` was read; a new
        password is hashed and clears a lockout. Disabling or a new password ends the
        user's sign-ins (`signed_in`)."""
        body = {**record.body, **check_user(user).public(), "updated": int(time.time())}
        if password is not None or (user.disabled and not record.body.get("disabled")):
            body["signed_out"] = time.time()
        if password is not None:
            body["password_hash"] = await asyncio.to_thread(self.hasher.hash,
                                                            check_password(password))
        if not await self.docs.swap(USERS, record, user.username, body):
            return False
        if password is not None:
            await self.docs.delete(LOCKOUTS, user.username)
        return True

    async def remove(self, username: str) -> bool:
        await self.docs.delete(LOCKOUTS, username)
        return await self.docs.delete(USERS, username)

    async def authenticate(self, username: str, password: str) -> User:
        now = int(time.time())
        lock = await self.docs.get(LOCKOUTS, username)
        if lock and lock.body.get("locked_until", 0) > now:
            raise LoginFailed("Too many failed attempts: this account is locked for a while")
        record = await self.docs.get(USERS, username) if USERNAME.match(username) else None
        stored = record.body["password_hash"] if record else await self._dummy_hash()
        if await asyncio.to_thread(self._check, stored, password) and record is not None:
            if record.body.get("disabled"):
                raise LoginFailed("This account is disabled; ask the practice's administrator")
            if lock is not None:
                await self.docs.delete(LOCKOUTS, username)
            return user_from_record(record.body)
        await self._count_failure(username, now)
        raise LoginFailed("Unknown username or wrong password")

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await asyncio.to_thread(self.hasher.hash, "not a password")
        return self._dummy

    async def _count_failure(self, username: str, now: int) -> None:
        window = self.settings.lockout_seconds
        for _ in range(5):  # compare-and-swap: concurrent failures all count
            lock = await self.docs.get(LOCKOUTS, username)
            failures = (lock.body.get("failures", 0) if lock else 0) + 1
            body: dict[str, Any] = {"failures": failures}
            if failures >= self.settings.lockout_attempts:
                body["locked_until"] = now + window
            expires = now + window
            if lock is None:
                done = await self.docs.create(LOCKOUTS, username, body, expires_at=expires)
            else:
                done = await self.docs.swap(LOCKOUTS, lock, username, body, expires_at=expires)
            if done:
                return


def user_from_record(body: dict[str, Any]) -> User:
    return User(body["username"], body.get("fhirUser"), body.get("name"),
                bool(body.get("admin")), bool(body.get("disabled")))
