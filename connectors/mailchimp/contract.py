"""Check requests against Mailchimp's own API description (the OpenAPI 3 conversion in spec/).

Used twice: the emulator refuses what the spec refuses, and the test suite checks every request our
client sends (`contract_check()` installs a recorder as a client request observer). The spec takes about
a second to load, so it is loaded once per process. Needs openapi-core, a dev/test dependency only.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathError
from openapi_core.validation.request.exceptions import (
    ParameterValidationError,
    RequestBodyValidationError,
    SecurityValidationError,
)
from werkzeug.datastructures import Headers, ImmutableMultiDict

from .errors import FieldError

SPEC_PATH = Path(__file__).resolve().parent / "spec" / "mailchimp-marketing-3.0.81.openapi3.patched.json"
# The spec's server is https://server.api.mailchimp.com/3.0: validating against that host means any
# emulator or proxy URL works, as long as the path carries /3.0.
_SPEC_HOST_URL = "https://server.api.mailchimp.com"
# Authentication is the emulator's job (it also takes Bearer tokens, which the spec doesn't describe).
_STAND_IN_AUTH = {"Authorization": "Basic dXNlcjpjb250cmFjdC1jaGVjaw=="}

_load_lock = threading.Lock()
_validator: Any = None


def spec_validator() -> Any:
    """The request validator of the spec, built once per process (thread-safe)."""
    global _validator
    if _validator is None:
        with _load_lock:
            if _validator is None:
                spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
                _validator = OpenAPI.from_dict(spec).request_validator
    return _validator


ViolationKind = Literal["path", "method", "parameters", "body"]


@dataclass(frozen=True)
class ContractViolation:
    method: str
    path: str
    kind: ViolationKind
    errors: tuple[FieldError, ...]

    def __str__(self) -> str:
        details = "; ".join(f"{error.field}: {error.message}" for error in self.errors)
        return f"{self.method} {self.path} breaks the Mailchimp API description ({self.kind}): {details}"


class _SpecRequest:
    """The request shape openapi-core reads."""

    def __init__(self, *, method: str, path: str, query: Sequence[tuple[str, str]], body: bytes | None) -> None:
        self.host_url = _SPEC_HOST_URL
        self.path = path
        self.method = method.lower()
        self.body = body
        self.content_type = "application/json"
        self.parameters = RequestParameters(query=ImmutableMultiDict(list(query)), header=Headers(_STAND_IN_AUTH))


def validate_request(
    *,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]] | Mapping[str, str] = (),
    body: bytes | str | None = None,
) -> ContractViolation | None:
    """None when the request fits the spec, else what is wrong. `path` includes /3.0.
    A batch (`POST /3.0/batches`) is also checked operation by operation."""
    pairs = list(query.items()) if isinstance(query, Mapping) else list(query)
    raw = body.encode("utf-8") if isinstance(body, str) else body
    request = _SpecRequest(method=method, path=path, query=[(k, str(v)) for k, v in pairs], body=raw)
    kind: ViolationKind = "parameters"
    errors: list[FieldError] = []
    for error in spec_validator().iter_errors(request):
        if isinstance(error, SecurityValidationError):
            continue
        if isinstance(error, PathError):
            kind = "method" if isinstance(error, OperationNotFound) else "path"
            message = f"{method.upper()} is not allowed here" if kind == "method" else "no such endpoint"
            return ContractViolation(method.upper(), path, kind, (FieldError(field="path", message=message),))
        if isinstance(error, RequestBodyValidationError):
            kind = "body"
        errors.extend(_field_errors(error))
    if not errors and method.upper() == "POST" and path.rstrip("/") == "/3.0/batches":
        errors = _batch_operation_errors(raw)
        kind = "body"
    if not errors:
        return None
    return ContractViolation(method.upper(), path, kind, tuple(errors))


def _field_errors(error: Exception) -> list[FieldError]:
    if isinstance(error, ParameterValidationError):
        cause = error.__cause__
        message = _schema_messages(cause) or str(cause or error)
        return [FieldError(field=f"{error.location}.{error.name}", message=message)]
    cause = error.__cause__
    schema_errors = list(getattr(cause, "schema_errors", None) or [])
    if schema_errors:
        return [
            FieldError(
                field=_json_path(getattr(item, "absolute_path", ())), message=getattr(item, "message", str(item))
            )
            for item in schema_errors
        ]
    return [FieldError(field="body", message=str(cause or error))]


def _schema_messages(cause: BaseException | None) -> str:
    schema_errors = list(getattr(cause, "schema_errors", None) or [])
    return "; ".join(getattr(item, "message", str(item)) for item in schema_errors)


def _json_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _batch_operation_errors(raw: bytes | None) -> list[FieldError]:
    try:
        operations = json.loads(raw or b"null").get("operations") or []
    except (ValueError, AttributeError):
        return []  # the body itself already passed the schema; nothing more to say
    errors: list[FieldError] = []
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            continue
        params = operation.get("params") or {}
        violation = validate_operation(
            method=str(operation.get("method", "")),
            path="/3.0" + str(operation.get("path", "")),
            query=[(key, _query_text(value)) for key, value in params.items()],
            body=operation.get("body"),
        )
        if violation:
            errors.extend(
                FieldError(field=f"operations[{index}].{error.field}", message=error.message)
                for error in violation.errors
            )
    return errors


# --- A faster check for the operations inside a batch ---------------------------------------------
# openapi-core takes about 1.4 ms per request; a batch holds hundreds of operations. For an operation
# without query parameters the check is the same (the endpoint and method exist, the body fits the
# operation's schema), done with a route table and one compiled schema validator per operation: ~40 µs.
# The route table is indexed by the path's shape, so an operation is matched against the few templates
# that can match it rather than all of them; the body schemas have their references inlined once, so
# validating an operation doesn't resolve them again.


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    body_schema: dict[str, Any] | None
    body_required: bool


@dataclass(frozen=True)
class _RouteTable:
    routes: list[_Route]  # in the spec's order
    # (number of "/" in the path, its first segment after /3.0) -> the routes that can match such a path, in
    # the spec's order; `unindexed` holds routes whose template the index can't vouch for.
    by_shape: dict[tuple[int, str], list[_Route]]
    unindexed: list[_Route]

    def candidates(self, path: str) -> list[_Route]:
        """The routes whose pattern matches `path` (with /3.0), in the spec's order."""
        if not path.startswith("/3.0/"):
            routes = self.routes
        else:
            routes = self.by_shape.get(_path_shape(path), [])
            if self.unindexed:
                order = {id(route): position for position, route in enumerate(self.routes)}
                routes = sorted([*routes, *self.unindexed], key=lambda route: order[id(route)])
        return [route for route in routes if route.pattern.fullmatch(path)]


def _path_shape(path: str) -> tuple[int, str]:
    parts = path.split("/")  # "/3.0/lists/x" -> ["", "3.0", "lists", "x"]
    return len(parts), parts[2]


_routes_lock = threading.Lock()
_routes: _RouteTable | None = None
_body_validators: dict[int, Any] = {}
_PARAMETER = re.compile(r"\{[^/}]+\}")


def _route_table() -> _RouteTable:
    global _routes
    if _routes is None:
        with _routes_lock:
            if _routes is None:
                spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
                table: list[_Route] = []
                by_shape: dict[tuple[int, str], list[_Route]] = {}
                unindexed: list[_Route] = []
                for template, operations in spec["paths"].items():
                    regex = re.compile("/3.0" + _PARAMETER.sub("[^/]+", template))
                    # A path of another shape can't match when every literal part of the template is plain text
                    # (no regex metacharacters) and every parameter is a whole segment (`[^/]+` never spans a /).
                    literal = _PARAMETER.sub("", template)
                    segments = template.split("/")
                    indexable = (
                        re.escape(literal) == literal.replace("-", "\\-")
                        and all("{" not in segment or _PARAMETER.fullmatch(segment) for segment in segments)
                        and len(segments) > 1
                        and "{" not in segments[1]
                    )
                    for method, operation in operations.items():
                        if method.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                            continue
                        body = (operation.get("requestBody") or {}).get("content", {}).get("application/json", {})
                        route = _Route(
                            method.upper(),
                            regex,
                            body.get("schema"),
                            bool((operation.get("requestBody") or {}).get("required")),
                        )
                        table.append(route)
                        if indexable:
                            by_shape.setdefault(_path_shape("/3.0" + template), []).append(route)
                        else:
                            unindexed.append(route)
                _routes = _RouteTable(table, by_shape, unindexed)
    return _routes


def _body_validator(schema: dict[str, Any]) -> Any:
    key = id(schema)
    validator = _body_validators.get(key)
    if validator is None:
        # What openapi-core uses for a request body: the write validator (readOnly properties refused) with
        # its format checker (date-time, ...), so an operation is held to what the same request made directly is.
        from openapi_schema_validator import OAS30WriteValidator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4

        spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
        registry = Registry().with_resource("spec.json", Resource.from_contents(spec, default_specification=DRAFT4))
        try:
            rooted = _inline_references(schema, spec, implemented=frozenset(OAS30WriteValidator.VALIDATORS))
        except _KeepReferences:
            rooted = {"$ref": "spec.json" + schema["$ref"]} if "$ref" in schema else schema
        validator = OAS30WriteValidator(
            rooted, registry=registry, format_checker=OAS30WriteValidator.FORMAT_CHECKER
        )
        _body_validators[key] = validator
    return validator


class _KeepReferences(Exception):
    """The schema can't be inlined without changing what its errors say."""


def _inline_references(
    node: Any, spec: dict[str, Any], *, implemented: frozenset[str], inlining: tuple[str, ...] = ()
) -> Any:
    """The schema with each local reference that stands alone (`{"$ref": "#/..."}`) replaced by what it points
    to, which is the same schema to a validator that applies every keyword, as OAS30Validator does, and gives
    the same errors (instance path and message). A reference inside its own target (recursion), one with
    sibling keywords and one to a schema that sets an `id` stay references, made absolute ("spec.json#/...")
    so the registry resolves them from the inlined schema as it did from the spec.

    A subschema with no keyword the validator implements (`implemented`), e.g. the description-only schema
    of every merge field's value, accepts anything: it becomes `true`, which the validator doesn't descend
    into (merge fields are most of a member's body).

    Raises _KeepReferences for a schema using `oneOf` or `not`, whose messages quote subschemas,
    `discriminator`, which maps names to references, or a schema keyword of an unexpected shape: those are
    validated as they are."""
    if not isinstance(node, dict):
        return node
    if "oneOf" in node or "not" in node or "discriminator" in node:
        raise _KeepReferences
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/"):
        target = _json_pointer(spec, reference[1:])
        if len(node) == 1 and reference not in inlining and isinstance(target, dict) and "id" not in target:
            return _inline_references(target, spec, implemented=implemented, inlining=(*inlining, reference))

    def subschema(value: Any) -> Any:
        inlined = _inline_references(value, spec, implemented=implemented, inlining=inlining)
        if isinstance(inlined, dict) and not any(keyword in implemented for keyword in inlined):
            return True
        return inlined

    copy: dict[str, Any] = {}
    for keyword, value in node.items():
        if keyword == "$ref" and isinstance(value, str) and value.startswith("#/"):
            copy[keyword] = "spec.json" + value
        elif keyword in ("items", "additionalProperties") and isinstance(value, dict):
            copy[keyword] = subschema(value)
        elif keyword in ("allOf", "anyOf") and isinstance(value, list):
            copy[keyword] = [
                _inline_references(item, spec, implemented=implemented, inlining=inlining) for item in value
            ]
        elif keyword == "properties" and isinstance(value, dict):
            copy[keyword] = {name: subschema(item) for name, item in value.items()}
        elif keyword in ("$ref", "items", "allOf", "anyOf", "properties"):
            raise _KeepReferences  # not a local reference, or not the shape OpenAPI 3.0 gives the keyword
        else:
            copy[keyword] = value
    return copy


def _json_pointer(document: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(document, list):
            document = document[int(token)] if token.isdigit() and int(token) < len(document) else None
        elif isinstance(document, dict):
            document = document.get(token)
        else:
            return None
    return document


def validate_operation(
    *, method: str, path: str, query: Sequence[tuple[str, str]] = (), body: Any = None
) -> ContractViolation | None:
    """Like validate_request, for one operation of a batch (`path` with /3.0; `body` a JSON string or
    value). Operations with query parameters take the full check."""
    method = method.upper()
    if query:
        text = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        return validate_request(method=method, path=path, query=query, body=text)
    candidates = _route_table().candidates(path)
    if not candidates:
        return ContractViolation(method, path, "path", (FieldError(field="path", message="no such endpoint"),))
    route = next((route for route in candidates if route.method == method), None)
    if route is None:
        message = f"{method} is not allowed here"
        return ContractViolation(method, path, "method", (FieldError(field="path", message=message),))
    if route.body_schema is None:
        return None
    if isinstance(body, str | bytes):
        try:
            body = json.loads(body) if body else None
        except ValueError as exc:
            return ContractViolation(method, path, "body", (FieldError(field="body", message=f"not JSON: {exc}"),))
    if body is None:
        if route.body_required:
            return ContractViolation(method, path, "body", (FieldError(field="body", message="a body is required"),))
        return None
    errors = tuple(
        FieldError(field=_json_path(error.absolute_path), message=error.message)
        for error in _body_validator(route.body_schema).iter_errors(body)
    )
    return ContractViolation(method, path, "body", errors) if errors else None


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


# --- The test-suite check -----------------------------------------------------------------------
class ObservedRequest(Protocol):
    method: str
    path: str
    query: Sequence[tuple[str, str]]
    body: str | None


class ContractViolationError(AssertionError):
    """A request our client was about to send breaks the Mailchimp API description."""


@dataclass
class ContractRecorder:
    """A client request observer that validates each request. A violation is recorded and raised at once
    (the request is not sent), so the test that caused it fails where it happened."""

    violations: list[ContractViolation] = field(default_factory=list)
    checked: int = 0
    _expecting: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, request: ObservedRequest) -> None:
        violation = validate_request(method=request.method, path=request.path, query=request.query, body=request.body)
        with self._lock:
            self.checked += 1
            if violation is None:
                return
            self.violations.append(violation)
            expecting = self._expecting > 0
        if not expecting:
            raise ContractViolationError(str(violation))

    @contextmanager
    def expect_violations(self) -> Iterator[list[ContractViolation]]:
        """For a test that sends a bad request on purpose: inside the block violations are only recorded
        (the request goes out, so the server's answer can be checked); the block must cause at least one,
        and they are handed back instead of failing the test."""
        with self._lock:
            before = len(self.violations)
            self._expecting += 1
        caught: list[ContractViolation] = []
        try:
            yield caught
        finally:
            with self._lock:
                self._expecting -= 1
                caught.extend(self.violations[before:])
                del self.violations[before:]
        if not caught:
            raise AssertionError("expected a request that breaks the Mailchimp API description, none did")

    def assert_clean(self) -> None:
        """Fails if a violation was recorded (e.g. one raised inside code that swallowed the error)."""
        if self.violations:
            raise ContractViolationError(
                "requests sent to Mailchimp break its API description:\n" + "\n".join(map(str, self.violations))
            )


@contextmanager
def contract_check() -> Iterator[ContractRecorder]:
    """Validate every request the Mailchimp client sends inside the block. Typical use, as an autouse
    fixture: `with contract_check() as recorder: yield recorder` then `recorder.assert_clean()`."""
    from . import client

    spec_validator()  # load before the first request, not inside it
    recorder = ContractRecorder()
    client.request_observers.append(recorder)
    try:
        yield recorder
    finally:
        client.request_observers.remove(recorder)
