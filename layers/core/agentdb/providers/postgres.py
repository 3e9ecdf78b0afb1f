"""The `postgres` provider: one database plus its own login role per tenant, on a server you run.

Isolation comes from the server: CONNECT on each tenant database is revoked from PUBLIC and granted
only to that tenant's role, so no tenant role can open another tenant's database. Passwords are set
as SCRAM-SHA-256 verifiers computed here, so the plaintext never reaches the server's logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from agentdb.errors import Conflict, UpstreamError, UpstreamUnavailable
from agentdb.providers.base import (
    BYTES_PER_GB,
    Consumption,
    ManagedDatabase,
    ProvisionedDatabase,
    Tenant,
    TenantKind,
    as_utc,
    month_fraction,
)
from agentdb.store.db import Database

logger = logging.getLogger("agentdb.providers.postgres")

_DUPLICATE_DATABASE = "42P04"
_DUPLICATE_OBJECT = "42710"
_UNDEFINED_OBJECT = "42704"
_UNAVAILABLE_CLASSES = ("08", "53", "57")  # connection, insufficient resources, operator intervention


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scram_sha256_verifier(password: str, *, iterations: int = 4096) -> str:
    """The verifier Postgres stores for a SCRAM-SHA-256 password (RFC 5802 / RFC 7677)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def readonly_role_for(name: str) -> str:
    """The read-only role of the tenant whose database (and owner role) is ``name``.

    Both come from ``Tenant.safe_identifier``: ``<head><readable>_<12 hex>``, at most 63 characters for
    the database and 60 for the read-only role (plus ``_ro``), so the role keeps the same hash and at
    most the first 47 characters of the rest.
    """
    body, tail = name[:-13], name[-13:]
    return body[: 60 - len(tail)] + tail + "_ro"


def _parse_label(comment: str | None) -> tuple[TenantKind, str, str | None] | None:
    """(kind, id, created_at) from a database comment written by ``PostgresProvider._label``."""
    if not comment:
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("managed_by") != "agentdb":
        return None
    kind, tenant_id, created = data.get("kind"), data.get("id"), data.get("created_at")
    if kind not in ("global", "workspace") or not isinstance(tenant_id, str) or not tenant_id:
        return None
    return ("global" if kind == "global" else "workspace"), tenant_id, created if isinstance(created, str) else None


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sqlstate(exc: BaseException) -> str | None:
    args = exc.args[0] if exc.args else None
    return args.get("C") if isinstance(args, dict) else None


class PostgresProvider:
    name = "postgres"

    def __init__(self, admin: Database, *, prefix: str = "agentdb-") -> None:
        self._admin = admin
        self._prefix = prefix
        self._lock = threading.Lock()

    def close(self) -> None:
        self._admin.close()

    # Names --------------------------------------------------------------------------------------
    def database_name(self, tenant: Tenant) -> str:
        return tenant.safe_identifier(self._prefix)

    def role_name(self, tenant: Tenant) -> str:
        return tenant.safe_identifier(self._prefix)

    def readonly_role_name(self, tenant: Tenant) -> str:
        return tenant.safe_identifier(self._prefix, max_len=60) + "_ro"

    def _name_prefix(self) -> str:
        return self._prefix.replace("-", "_")

    # Interface ----------------------------------------------------------------------------------
    def create(self, tenant: Tenant) -> ProvisionedDatabase:
        dbname, role = self.database_name(tenant), self.role_name(tenant)
        password = secrets.token_urlsafe(32)
        verifier = scram_sha256_verifier(password)
        with self._errors("create the tenant database"):
            try:
                self._run(
                    f"CREATE ROLE {quote_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    f" NOBYPASSRLS PASSWORD '{verifier}'"
                )
            except Exception as exc:
                if _sqlstate(exc) != _DUPLICATE_OBJECT:
                    raise
                # An earlier attempt made the role; its password is unknown to us, so set a new one.
                self._run(f"ALTER ROLE {quote_ident(role)} LOGIN PASSWORD '{verifier}'")
            try:
                self._run(f"CREATE DATABASE {quote_ident(dbname)} OWNER {quote_ident(role)}")
            except Exception as exc:
                if _sqlstate(exc) != _DUPLICATE_DATABASE:
                    raise
            self._label(dbname, tenant)
            self._run(f"REVOKE ALL ON DATABASE {quote_ident(dbname)} FROM PUBLIC")
            self._run(f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(dbname)} TO {quote_ident(role)}")
            self._run(f"ALTER DATABASE {quote_ident(dbname)} ALLOW_CONNECTIONS true")
        uri = self._admin.url.with_credentials(role, password, dbname)
        readonly_uri = self._create_readonly_role(tenant, dbname, owner_uri=uri)
        return ProvisionedDatabase(
            project_id=dbname,
            branch_id=None,
            database_name=dbname,
            role_name=role,
            connection_uri=uri,
            readonly_connection_uri=readonly_uri,
        )

    def _create_readonly_role(self, tenant: Tenant, dbname: str, *, owner_uri: str) -> str:
        """A login role that can read every table the owner makes, now and later, and write nothing."""
        owner, ro = quote_ident(self.role_name(tenant)), quote_ident(self.readonly_role_name(tenant))
        password = secrets.token_urlsafe(32)
        verifier = scram_sha256_verifier(password)
        with self._errors("create the read-only role"):
            try:
                self._run(f"CREATE ROLE {ro} LOGIN NOINHERIT PASSWORD '{verifier}'")
            except Exception as exc:
                if _sqlstate(exc) != _DUPLICATE_OBJECT:
                    raise
                self._run(f"ALTER ROLE {ro} LOGIN PASSWORD '{verifier}'")
            self._run(f"ALTER ROLE {ro} SET default_transaction_read_only = on")
            self._run(f"GRANT CONNECT ON DATABASE {quote_ident(dbname)} TO {ro}")
            # Grants inside the tenant database are made by its owner, over the owner's own connection.
            tenant_db = Database(owner_uri, timeout=30, application_name="agentdb-provisioner")
            try:
                tenant_db.run(f"GRANT USAGE ON SCHEMA public TO {ro}")
                tenant_db.run(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro}")
                tenant_db.run(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON TABLES TO {ro}")
                tenant_db.run(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON SEQUENCES TO {ro}")
                tenant_db.run(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT USAGE ON SCHEMAS TO {ro}")
            finally:
                tenant_db.close()
        return self._admin.url.with_credentials(self.readonly_role_name(tenant), password, dbname)

    def delete(self, tenant: Tenant, project_id: str | None = None) -> None:
        dbname, role = project_id or self.database_name(tenant), self.role_name(tenant)
        with self._errors("delete the tenant database"):
            # WITH (FORCE) terminates the tenant's sessions first (Postgres 13+).
            self._run(f"DROP DATABASE IF EXISTS {quote_ident(dbname)} WITH (FORCE)")
            self._run(f"DROP ROLE IF EXISTS {quote_ident(self.readonly_role_name(tenant))}")
            self._run(f"DROP ROLE IF EXISTS {quote_ident(role)}")

    def connection_uri(self, tenant: Tenant, project_id: str) -> str:
        """A new URI. The server keeps only a verifier, so this sets a fresh password."""
        role = self.role_name(tenant)
        password = secrets.token_urlsafe(32)
        with self._errors("reset the tenant role's password"):
            self._run(f"ALTER ROLE {quote_ident(role)} PASSWORD '{scram_sha256_verifier(password)}'")
        return self._admin.url.with_credentials(role, password, project_id)

    def pause(self, tenant: Tenant, project_id: str) -> None:
        role = self.role_name(tenant)
        with self._errors("pause the tenant database"):
            self._run(f"ALTER DATABASE {quote_ident(project_id)} ALLOW_CONNECTIONS false")
            self._run(f"ALTER ROLE {quote_ident(role)} NOLOGIN")
            if self._role_exists(self.readonly_role_name(tenant)):  # databases made before read-only roles
                self._run(f"ALTER ROLE {quote_ident(self.readonly_role_name(tenant))} NOLOGIN")
            self._run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :db AND pid <> pg_backend_pid()",
                db=project_id,
            )

    def resume(self, tenant: Tenant, project_id: str) -> None:
        role = self.role_name(tenant)
        with self._errors("resume the tenant database"):
            self._run(f"ALTER ROLE {quote_ident(role)} LOGIN")
            if self._role_exists(self.readonly_role_name(tenant)):
                self._run(f"ALTER ROLE {quote_ident(self.readonly_role_name(tenant))} LOGIN")
            self._run(f"ALTER DATABASE {quote_ident(project_id)} ALLOW_CONNECTIONS true")

    def resource_name(self, tenant: Tenant) -> str:
        return self.database_name(tenant)

    def _label(self, dbname: str, tenant: Tenant) -> None:
        """Record on the database, once, which tenant it is for and when it was made (reconciliation reads
        it: the server keeps no creation time of its own). ``format(%I, %L)`` quotes both safely.

        Best effort: a role that may not comment on the database only loses the label (reconciliation then
        ages the database from when it first sees it as an orphan), never the provisioning.
        """
        try:
            rows = self._run(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :db", db=dbname
            )
            if rows and _parse_label(rows[0][0]) is not None:
                return
            label = json.dumps(
                {"managed_by": "agentdb", "kind": tenant.kind, "id": tenant.id, "created_at": _utc_now_iso()},
                separators=(",", ":"),
            )
            statement = self._run(
                "SELECT format('COMMENT ON DATABASE %I IS %L', CAST(:db AS text), CAST(:label AS text))",
                db=dbname,
                label=label,
            )
            self._run(statement[0][0])
        except Exception as exc:
            if _sqlstate(exc) is None:  # the connection, not a refusal: let the caller's error mapping decide
                raise
            logger.warning("could not label tenant database %s (SQLSTATE %s)", dbname, _sqlstate(exc))

    def _kind_patterns(self) -> tuple[str, str]:
        """LIKE patterns of our two name heads (``<prefix>g_`` / ``<prefix>w_``, as Tenant.safe_identifier)."""
        head = self._name_prefix().replace("_", r"\_")
        return head + r"g\_%", head + r"w\_%"

    def _is_ours(self, name: str) -> bool:
        """Our names end in ``_<12 hex>`` (the id's hash); anything else under the prefix is left alone."""
        prefix = re.escape(self._name_prefix())
        return re.fullmatch(prefix + r"[gw]_[a-z0-9_]*_[0-9a-f]{12}", name) is not None

    def list_managed(self) -> list[ManagedDatabase]:
        """Tenant databases, and login roles left without one, under our prefix.

        Each database carries its tenant and creation time in its comment (``_label``), trusted only
        when the tenant's name really is this database's name. Databases made before labels existed,
        and bare roles, have no known creation time (None): the reconciler then counts an orphan's age
        from when it first saw it.
        """
        pg, pw = self._kind_patterns()
        with self._errors("list tenant databases"):
            dbs = self._run(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
                " WHERE datname LIKE :g OR datname LIKE :w ORDER BY datname",
                g=pg,
                w=pw,
            )
            roles = self._run(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE :g OR rolname LIKE :w ORDER BY rolname", g=pg, w=pw
            )
        items: dict[str, ManagedDatabase] = {}
        for name, comment in dbs:
            if not self._is_ours(name):
                continue
            label = _parse_label(comment)
            tenant = Tenant(label[0], label[1]) if label else None
            if tenant is not None and self.database_name(tenant) != name:
                tenant = None
            items[name] = ManagedDatabase(
                project_id=name, name=name, created_at=label[2] if label and tenant else None, tenant=tenant
            )
        names = [r[0] for r in roles]
        for role in names:  # owner roles left without their database
            if not role.endswith("_ro") and self._is_ours(role) and role not in items:
                items[role] = ManagedDatabase(project_id=role, name=role, kind="role")
        covered = {readonly_role_for(name) for name in items}
        for role in names:  # read-only roles whose owner is gone too
            if role.endswith("_ro") and self._is_ours(role[:-3]) and role not in covered:
                items[role] = ManagedDatabase(project_id=role, name=role, kind="role")
        return sorted(items.values(), key=lambda m: m.name)

    def delete_managed(self, item: ManagedDatabase) -> None:
        """Drop the database ``item`` names and its owner and read-only roles (derived from the name)."""
        name = item.project_id
        base = name[:-3] if item.kind == "role" and name.endswith("_ro") else name
        if not self._is_ours(base):
            raise Conflict(f"refusing to delete {name!r}: not a tenant database name of this deployment")
        with self._errors("delete an orphaned tenant database"):
            if item.kind == "database":
                self._run(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            if base == name:
                self._run(f"DROP ROLE IF EXISTS {quote_ident(readonly_role_for(name))}")
            self._run(f"DROP ROLE IF EXISTS {quote_ident(name)}")

    def list_managed_roles(self) -> list[str]:
        pattern = self._name_prefix().replace("_", r"\_") + "%"
        with self._errors("list tenant roles"):
            rows = self._run("SELECT rolname FROM pg_roles WHERE rolname LIKE :p ORDER BY rolname", p=pattern)
        return [r[0] for r in rows]

    def consumption(self, project_ids: list[str], start: datetime, end: datetime) -> dict[str, Consumption]:
        """Use of each tenant database (``project_ids`` are database names), in one query for the batch.

        * Storage: ``pg_database_size`` now, taken as the average size over ``[start, end]``:
          GB-months = bytes / BYTES_PER_GB * the fraction of a 30-day month the window covers.
        * Compute: ``pg_stat_database.active_time`` (milliseconds spent executing statements, Postgres
          14+), the database counted as 1 CU while active: CU-hours = active_time / 3,600,000. The
          server only keeps it as a counter since the last statistics reset (``stats_reset``), so the
          value is returned as that cumulative counter (``compute_cumulative=True``, ``compute_since`` =
          the reset time, None if never reset): the sync bills the difference from its previous reading,
          and a reading below that one means a reset (then the whole new reading is new use). Before
          Postgres 14 there is no active_time and compute reads 0.

        Names that are not databases on the server (dropped) are left out.
        """
        names = list(dict.fromkeys(str(p) for p in project_ids))
        if not names:
            return {}
        start, end = as_utc(start), as_utc(end)
        fraction = month_fraction(start, end)
        with self._errors("read tenant database usage"):
            has_active_time = bool(
                self._run(
                    "SELECT 1 FROM pg_attribute WHERE attrelid = 'pg_catalog.pg_stat_database'::regclass"
                    " AND attname = 'active_time' AND NOT attisdropped"
                )
            )
            active = "s.active_time" if has_active_time else "0::float8"
            rows = self._run(
                f"SELECT d.datname, pg_database_size(d.oid), COALESCE({active}, 0), s.stats_reset"
                " FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid"
                " WHERE d.datname = ANY(CAST(:names AS text[]))",
                names=names,
            )
        result: dict[str, Consumption] = {}
        for name, size, active_ms, stats_reset in rows:
            result[name] = Consumption(
                project_id=name,
                compute_cu_hours=float(active_ms) / 3_600_000.0,
                storage_gb_months=int(size) / BYTES_PER_GB * fraction,
                source="postgres",
                period_start=start,
                period_end=end,
                compute_cumulative=True,
                compute_since=stats_reset,
            )
        return result

    def _role_exists(self, name: str) -> bool:
        return bool(self._run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=name))

    # Helpers ------------------------------------------------------------------------------------
    def _run(self, sql: str, **params: Any) -> list[list[Any]]:
        with self._lock:
            return self._admin.run(sql, **params)

    class _ErrorMapper:
        def __init__(self, action: str) -> None:
            self.action = action

        def __enter__(self) -> None:
            return None

        def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
            if exc is None or not isinstance(exc, Exception) or isinstance(exc, UpstreamError | UpstreamUnavailable):
                return
            state = _sqlstate(exc)
            if state is None or state.startswith(_UNAVAILABLE_CLASSES):
                raise UpstreamUnavailable(
                    f"the tenant Postgres server is unavailable; could not {self.action}"
                ) from None
            raise UpstreamError(f"the tenant Postgres server refused to {self.action} (SQLSTATE {state})") from None

    def _errors(self, action: str) -> PostgresProvider._ErrorMapper:
        return PostgresProvider._ErrorMapper(action)
