"""The ``kms`` keyring: data keys from KMS ``GenerateDataKey``, unwrapped with KMS ``Decrypt``.

The encryption context goes to KMS as ``EncryptionContext`` (so KMS binds the wrapped key to the tenant
and logs it in CloudTrail) and is the record's AAD. Tokens carry the key ARN KMS reported, and
``Decrypt`` names it as ``KeyId``, so tokens made under an older key keep decrypting after
``KMS_KEY_ID`` moves to a new key. boto3 is imported, and the client created, on first use.

KMS errors map to domain errors: throttling, 5xx and network failures are ``UpstreamUnavailable``; any
other refusal to decrypt (InvalidCiphertext, AccessDenied, IncorrectKey, NotFound, ...) is
``DecryptionError``; a key that cannot be used to encrypt is a ``ConfigError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agentdb.crypto.cache import DataKeyCache
from agentdb.crypto.envelope import EnvelopeKeyring
from agentdb.crypto.token import DATA_KEY_BYTES
from agentdb.errors import AgentDBError, ConfigError, DecryptionError, UpstreamError, UpstreamUnavailable

_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_KEY_UNUSABLE_CODES = frozenset(
    {
        "NotFoundException",
        "DisabledException",
        "KMSInvalidStateException",
        "InvalidKeyUsageException",
        "AccessDeniedException",
        "InvalidArnException",
        "ValidationException",
    }
)


def _map_kms_error(exc: Exception, operation: str, *, decrypting: bool) -> AgentDBError | None:
    """The domain error for a botocore failure, or None if ``exc`` is not one (then re-raise it)."""
    try:
        from botocore import exceptions as bce
    except ImportError:  # pragma: no cover - botocore ships with the Lambda runtime
        return None
    if isinstance(exc, bce.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _RETRYABLE_CODES or (isinstance(status, int) and status >= 500):
            return UpstreamUnavailable(f"KMS {operation} is unavailable or throttling ({code}); retry later")
        if decrypting:
            return DecryptionError(
                f"KMS refused to unwrap the data key ({code}): wrong tenant or purpose, "
                "an altered token, or a key this service may not use"
            )
        if code in _KEY_UNUSABLE_CODES:
            return ConfigError(f"configuration: KMS_KEY_ID cannot be used for {operation} ({code})")
        return UpstreamError(f"KMS {operation} failed ({code})")
    if isinstance(exc, bce.ParamValidationError):
        if decrypting:
            return DecryptionError("malformed token: not a valid KMS request")
        return ConfigError("configuration: KMS_KEY_ID is not a valid KMS key id")
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError | bce.NoRegionError):
        return ConfigError(f"configuration: AWS credentials or region for KMS are missing ({type(exc).__name__})")
    if isinstance(exc, bce.BotoCoreError):
        return UpstreamUnavailable(f"KMS {operation} could not be reached ({type(exc).__name__}); retry later")
    return None


def default_kms_client(region_name: str | None = None) -> Any:
    """A KMS client with short timeouts and standard retries (imports boto3 on first call)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)
    return boto3.session.Session().client("kms", region_name=region_name, config=config)


class KmsKeyring(EnvelopeKeyring):
    """Envelope encryption with KMS-generated data keys.

    ``key_id`` (``KMS_KEY_ID``) may be a key id, key ARN, alias name or alias ARN. Pass ``client`` (any
    boto3 KMS client) or ``client_factory`` to control how the client is made; by default it is made
    lazily, once, with :func:`default_kms_client`.
    """

    name = "kms"

    def __init__(
        self,
        key_id: str,
        *,
        client: Any | None = None,
        client_factory: Callable[[], Any] | None = None,
        region_name: str | None = None,
        cache: DataKeyCache | None = None,
        key_resolution_ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(cache=cache)
        if not key_id:
            raise ConfigError("configuration: KMS_KEY_ID must be set")
        self._key_id = key_id
        self._client_obj = client
        self._client_factory = client_factory or (lambda: default_kms_client(region_name))
        self._lock = threading.Lock()
        self._resolution_ttl = key_resolution_ttl_seconds
        self._clock = clock
        self._resolved_arn: tuple[float, str] | None = None  # (expires at, ARN of the current key)

    @property
    def current_key_id(self) -> str:
        """The configured ``KMS_KEY_ID`` (tokens carry the ARN of the key it named when they were made)."""
        return self._key_id

    def _client(self) -> Any:
        client = self._client_obj
        if client is None:
            with self._lock:
                if self._client_obj is None:
                    self._client_obj = self._client_factory()
                client = self._client_obj
        return client

    def _call(self, operation: str, *, decrypting: bool, **params: Any) -> dict[str, Any]:
        method = getattr(self._client(), operation)
        try:
            response: dict[str, Any] = method(**params)
        except Exception as exc:
            mapped = _map_kms_error(exc, operation, decrypting=decrypting)
            if mapped is None:
                raise
            raise mapped from None
        return response

    def _remember_arn(self, arn: str) -> None:
        with self._lock:
            self._resolved_arn = (self._clock() + self._resolution_ttl, arn)

    def _generate_data_key(self, context: dict[str, str], aad: bytes) -> tuple[str, bytes, bytes]:
        response = self._call(
            "generate_data_key", decrypting=False, KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=context
        )
        data_key, wrapped, arn = response["Plaintext"], response["CiphertextBlob"], str(response["KeyId"])
        if len(data_key) != DATA_KEY_BYTES or not wrapped:
            raise UpstreamError("KMS generate_data_key returned an unexpected data key")
        self._remember_arn(arn)
        return arn, data_key, wrapped

    def _unwrap_data_key(self, key_id: str, wrapped: bytes, context: dict[str, str], aad: bytes) -> bytes:
        response = self._call(
            "decrypt",
            decrypting=True,
            CiphertextBlob=wrapped,
            EncryptionContext=context,
            KeyId=key_id,
            EncryptionAlgorithm="SYMMETRIC_DEFAULT",
        )
        answered = response.get("KeyId")
        if key_id.startswith("arn:") and answered and answered != key_id:
            raise DecryptionError("KMS unwrapped the data key under a different key than the token names")
        data_key: bytes = response["Plaintext"]
        return data_key

    def _current_key_arn(self) -> str:
        with self._lock:
            cached = self._resolved_arn
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        response = self._call("describe_key", decrypting=False, KeyId=self._key_id)
        arn = str(response["KeyMetadata"]["Arn"])
        self._remember_arn(arn)
        return arn

    def _is_current_key(self, key_id: str) -> bool:
        configured = self._key_id
        if key_id == configured:
            return True
        if configured.startswith("arn:") and ":key/" in configured:
            return False  # a key ARN names exactly one key
        if not configured.startswith(("arn:", "alias/")):
            return key_id.startswith("arn:") and key_id.endswith(":key/" + configured)
        return key_id == self._current_key_arn()  # an alias: ask KMS which key it names now
