"""Read template.yaml into the small model the local gateway routes by.

The template is the only route table: functions, their HttpApi routes (with the authorizer and scopes
each route needs) and their EventBridge rules all come from it. CloudFormation short tags (``!Ref``,
``!Sub``, ``!GetAtt``, ``!If``, ...) are loaded as their long forms (``{"Ref": ...}``,
``{"Fn::Sub": ...}``) and resolved as far as a local run can: parameters to their defaults (or
overrides), pseudo parameters to fixed local values, conditions evaluated, anything else (a resource's
ARN) left as the unresolved intrinsic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_REGION = "us-east-1"
LOCAL_STACK_NAME = "agentdb-local"

_PSEUDO_PARAMETERS = {
    "AWS::AccountId": LOCAL_ACCOUNT_ID,
    "AWS::Region": LOCAL_REGION,
    "AWS::StackName": LOCAL_STACK_NAME,
    "AWS::StackId": f"arn:aws:cloudformation:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:stack/{LOCAL_STACK_NAME}/local",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NoValue": None,
}

# Tags whose long form is not "Fn::<Tag>".
_TAG_NAMES = {"Ref": "Ref", "Condition": "Condition"}

DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128


class TemplateError(ValueError):
    """The template cannot be routed from (missing file, bad YAML, a function without a handler...)."""


# --------------------------------------------------------------------------------------------------
# YAML with CloudFormation tags


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns ``!Tag value`` into ``{"Fn::Tag": value}`` (``!Ref`` → ``{"Ref": ...}``)."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = _TAG_NAMES.get(tag_suffix, f"Fn::{tag_suffix}")
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":  # !GetAtt Res.Attr.Sub → ["Res", "Attr.Sub"]
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)
    except FileNotFoundError:
        raise TemplateError(f"template not found: {path}") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: not a CloudFormation template (top level is not a mapping)")
    return data


# --------------------------------------------------------------------------------------------------
# Intrinsic functions, resolved as far as a local run can


class Unresolved:
    """Marker for a value only CloudFormation can compute (a resource attribute, an import...)."""

    def __init__(self, expr: Any) -> None:
        self.expr = expr

    def __repr__(self) -> str:
        return f"Unresolved({self.expr!r})"


@dataclass
class _Resolver:
    parameters: Mapping[str, Any]
    resources: Mapping[str, Any]
    conditions: Mapping[str, Any]
    mappings: Mapping[str, Any]
    _condition_cache: dict[str, bool] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" or key.startswith("Fn::") or (key == "Condition" and isinstance(arg, str)):
                return self._intrinsic(key, arg)
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not _NO_VALUE}

    def condition(self, name: str) -> bool:
        if name not in self._condition_cache:
            if name not in self.conditions:
                raise TemplateError(f"unknown condition {name!r}")
            self._condition_cache[name] = bool(self._truth(self.conditions[name]))
        return self._condition_cache[name]

    def _truth(self, expr: Any) -> bool:
        value = self.resolve(expr)
        if isinstance(value, Unresolved):
            return False
        return value is True or (isinstance(value, str) and value.lower() == "true")

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self._ref(str(arg))
        if key == "Condition":
            return self.condition(str(arg))
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self.resolve(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = (self.resolve(a) for a in arg)
            if isinstance(left, Unresolved) or isinstance(right, Unresolved):
                return Unresolved({key: arg})
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self._truth(arg[0])
        if key == "Fn::And":
            return all(self._truth(a) for a in arg)
        if key == "Fn::Or":
            return any(self._truth(a) for a in arg)
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::Join":
            sep, items = arg[0], self.resolve(arg[1])
            if isinstance(items, Unresolved) or any(isinstance(i, Unresolved) for i in items):
                return Unresolved({key: arg})
            return str(sep).join(str(i) for i in items)
        if key == "Fn::Select":
            index, items = self.resolve(arg[0]), self.resolve(arg[1])
            if isinstance(items, list) and not isinstance(index, Unresolved):
                return items[int(index)]
            return Unresolved({key: arg})
        if key == "Fn::Split":
            sep, text = arg[0], self.resolve(arg[1])
            return text.split(sep) if isinstance(text, str) else Unresolved({key: arg})
        if key == "Fn::FindInMap":
            names = [self.resolve(a) for a in arg[:3]]
            try:
                return self.resolve(self.mappings[names[0]][names[1]][names[2]])
            except (KeyError, TypeError):
                return self.resolve(arg[3]["DefaultValue"]) if len(arg) > 3 else Unresolved({key: arg})
        if key == "Fn::ToJsonString":
            return json.dumps(self.resolve(arg), separators=(",", ":"))
        return Unresolved({key: arg})

    def _ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in _PSEUDO_PARAMETERS:
            value = _PSEUDO_PARAMETERS[name]
            return _NO_VALUE if value is None else value
        return Unresolved({"Ref": name})

    def _sub(self, arg: Any) -> Any:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}
        unresolved = False

        def replace(match: re.Match[str]) -> str:
            nonlocal unresolved
            inner = match.group(1)
            if inner.startswith("!"):  # ${!Literal}
                return "${" + inner[1:] + "}"
            value = variables[inner] if inner in variables else self._ref(inner)
            if isinstance(value, Unresolved) or value is _NO_VALUE:
                unresolved = True
                return match.group(0)
            return str(value)

        result = re.sub(r"\$\{([^}]+)\}", replace, str(text))
        return Unresolved({"Fn::Sub": arg}) if unresolved else result


_NO_VALUE = object()


# --------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_dir: Path
    handler: str  # as written: "app.handler"
    module: str  # "app"
    function: str  # "handler"
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    memory_mb: int = DEFAULT_MEMORY_MB

    @property
    def module_file(self) -> Path:
        return self.code_dir / (self.module.replace(".", "/") + ".py")


_PARAM = re.compile(r"^\{([^{}+]+)\}$")
_GREEDY = re.compile(r"^\{([^{}+]+)\+\}$")


@dataclass(frozen=True)
class HttpRoute:
    """One HttpApi route. ``authorizer`` is None for a public route."""

    function: str
    method: str  # upper case, or "ANY"
    path: str  # "/users/{userId}", or "$default"
    authorizer: str | None
    scopes: tuple[str, ...] = ()
    event_name: str = ""

    @property
    def public(self) -> bool:
        return self.authorizer is None

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        """Path parameters (URL-decoded) when this route serves ``method raw_path``, else None."""
        if self.method not in ("ANY", method.upper()):
            return None
        if self.path == "$default":
            return {}
        want = _segments(self.path)
        have = _segments(raw_path)
        params: dict[str, str] = {}
        for i, seg in enumerate(want):
            greedy = _GREEDY.match(seg)
            if greedy:
                if i != len(want) - 1 or i >= len(have):
                    return None
                params[greedy.group(1)] = unquote("/".join(have[i:]))
                return params
            if i >= len(have):
                return None
            param = _PARAM.match(seg)
            if param:
                if not have[i]:
                    return None
                params[param.group(1)] = unquote(have[i])
            elif unquote(have[i]) != seg:
                return None
        return params if len(have) == len(want) else None

    def specificity(self) -> tuple[int, ...]:
        """Sort key: API Gateway prefers literal segments, then {param}, then {proxy+}; then a method."""
        if self.path == "$default":
            return (-1,)
        ranks = [0 if _GREEDY.match(s) else 1 if _PARAM.match(s) else 2 for s in _segments(self.path)]
        return (*ranks, 0 if self.method == "ANY" else 1)


def _segments(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


@dataclass(frozen=True)
class EventRule:
    """An EventBridge rule targeting a function (SAM ``EventBridgeRule`` or an ``AWS::Events::Rule``)."""

    function: str
    name: str
    pattern: dict[str, Any]
    input: Any = None  # a constant event (the target's Input), or None
    input_path: str | None = None  # "$.detail" style


@dataclass(frozen=True)
class Cors:
    """An HttpApi's CorsConfiguration (API Gateway answers preflights itself when it is set)."""

    allow_origins: tuple[str, ...] = ("*",)
    allow_methods: tuple[str, ...] = ("*",)
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    def allow_origin(self, origin: str) -> str | None:
        """The access-control-allow-origin value for ``origin``, or None when it is not allowed."""
        if origin in self.allow_origins:
            return origin
        return "*" if "*" in self.allow_origins else None


@dataclass(frozen=True)
class Template:
    path: Path
    parameters: dict[str, Any]
    functions: dict[str, Function]
    routes: list[HttpRoute]
    rules: list[EventRule]
    layer_dirs: list[Path]
    cors: Cors | None = None

    def find_route(self, method: str, raw_path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        candidates = []
        for route in self.routes:
            params = route.match(method, raw_path)
            if params is not None:
                candidates.append((route, params))
        if not candidates:
            return None
        return max(candidates, key=lambda c: c[0].specificity())


def load_template(
    path: Path | str,
    *,
    base_dir: Path | str | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
) -> Template:
    """Parse a SAM template. CodeUri and layer ContentUri are relative to ``base_dir`` (the template's dir)."""
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    doc = load_yaml(path)
    resources = doc.get("Resources") or {}
    if not isinstance(resources, dict):
        raise TemplateError(f"{path}: Resources is not a mapping")

    parameters: dict[str, Any] = {}
    for name, spec in (doc.get("Parameters") or {}).items():
        if isinstance(spec, dict) and "Default" in spec:
            default = spec["Default"]
            if spec.get("Type") == "CommaDelimitedList" and isinstance(default, str):
                default = [part.strip() for part in default.split(",")]
            parameters[name] = default
    parameters.update(parameter_overrides or {})
    resolver = _Resolver(parameters, resources, doc.get("Conditions") or {}, doc.get("Mappings") or {})

    globals_fn = resolver.resolve((doc.get("Globals") or {}).get("Function") or {})
    functions: dict[str, Function] = {}
    routes: list[HttpRoute] = []
    rules: list[EventRule] = []
    layer_dirs: list[Path] = []
    cors: Cors | None = None

    for logical_id, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        rtype = resource.get("Type")
        if rtype == "AWS::Serverless::Function":
            props = {**globals_fn, **resolver.resolve(resource.get("Properties") or {})}
            functions[logical_id] = _function(logical_id, props, base, path)
            for event_name, event in (props.get("Events") or {}).items():
                etype, eprops = event.get("Type"), event.get("Properties") or {}
                if etype == "HttpApi":
                    routes.append(_http_route(logical_id, event_name, eprops, resources, resolver))
                elif etype in ("EventBridgeRule", "CloudWatchEvent"):
                    rules.append(
                        EventRule(
                            function=logical_id,
                            name=f"{logical_id}.{event_name}",
                            pattern=eprops.get("Pattern") or {},
                            input=_json_input(eprops.get("Input")),
                            input_path=eprops.get("InputPath"),
                        )
                    )
        elif rtype == "AWS::Serverless::HttpApi" and cors is None:
            cors = _cors(resolver.resolve((resource.get("Properties") or {}).get("CorsConfiguration")))
        elif rtype == "AWS::Serverless::LayerVersion":
            content = resolver.resolve((resource.get("Properties") or {}).get("ContentUri"))
            if isinstance(content, str):
                layer_dirs.append((base / content).resolve())

    # Plain CloudFormation rules whose targets are functions of this template.
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Events::Rule":
            continue
        props = resolver.resolve(resource.get("Properties") or {})
        if "EventPattern" not in props or props.get("State", "ENABLED") != "ENABLED":
            continue
        for target in props.get("Targets") or []:
            arn = target.get("Arn")
            expr = arn.expr if isinstance(arn, Unresolved) else None
            fn_id = _target_function(expr)
            if fn_id in functions:
                rules.append(
                    EventRule(
                        function=fn_id,
                        name=f"{logical_id}.{target.get('Id', fn_id)}",
                        pattern=props["EventPattern"],
                        input=_json_input(target.get("Input")),
                        input_path=target.get("InputPath"),
                    )
                )

    return Template(
        path=path,
        parameters=parameters,
        functions=functions,
        routes=routes,
        rules=rules,
        layer_dirs=layer_dirs,
        cors=cors,
    )


def _cors(config: Any) -> Cors | None:
    if config is True:
        return Cors()
    if not isinstance(config, dict):
        return None

    def strings(key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = config.get(key)
        if isinstance(value, str):
            value = [value]
        return tuple(str(v) for v in value) if isinstance(value, list) else default

    max_age = config.get("MaxAge")
    return Cors(
        allow_origins=strings("AllowOrigins"),
        allow_methods=strings("AllowMethods"),
        allow_headers=strings("AllowHeaders"),
        expose_headers=strings("ExposeHeaders"),
        max_age=int(max_age) if isinstance(max_age, int | str) and str(max_age).isdigit() else None,
        allow_credentials=config.get("AllowCredentials") in (True, "true"),
    )


def _function(logical_id: str, props: dict[str, Any], base: Path, path: Path) -> Function:
    code_uri, handler = props.get("CodeUri"), props.get("Handler")
    if not isinstance(code_uri, str) or not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{path}: function {logical_id} needs a local CodeUri and a Handler 'module.function'")
    module, function = handler.rsplit(".", 1)
    module = module.replace("/", ".")
    return Function(
        logical_id=logical_id,
        code_dir=(base / code_uri).resolve(),
        handler=handler,
        module=module,
        function=function,
        timeout_seconds=_number(props.get("Timeout"), DEFAULT_TIMEOUT_SECONDS),
        memory_mb=int(_number(props.get("MemorySize"), DEFAULT_MEMORY_MB)),
    )


def _number(value: Any, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default  # an intrinsic only CloudFormation can resolve


def _http_route(
    function: str, event_name: str, props: dict[str, Any], resources: Mapping[str, Any], resolver: _Resolver
) -> HttpRoute:
    api_auth = _api_auth(props.get("ApiId"), resources, resolver)
    default_authorizer = api_auth.get("DefaultAuthorizer")
    authorizers = api_auth.get("Authorizers") or {}
    auth = props.get("Auth") or {}
    authorizer = auth.get("Authorizer", default_authorizer)
    # No API resource to read a default from (implicit API): fail closed with the JWT authorizer.
    if authorizer is None and not api_auth:
        authorizer = "JwtAuthorizer"
    if authorizer == "NONE":
        authorizer = None
    scopes = auth.get("AuthorizationScopes")
    if scopes is None and authorizer is not None:
        scopes = (authorizers.get(authorizer) or {}).get("AuthorizationScopes")
    method = str(props.get("Method") or "ANY").upper()
    route_path = str(props.get("Path") or "$default")
    return HttpRoute(
        function=function,
        method="ANY" if method in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD", "*") else method,
        path=route_path,
        authorizer=authorizer,
        scopes=tuple(str(s) for s in scopes or ()),
        event_name=event_name,
    )


def _api_auth(api_id: Any, resources: Mapping[str, Any], resolver: _Resolver) -> dict[str, Any]:
    """The Auth block of the HttpApi a route belongs to ({} when the API is implicit or not found)."""
    name: str | None = None
    if isinstance(api_id, Unresolved) and isinstance(api_id.expr, dict):
        ref = api_id.expr.get("Ref")
        name = ref if isinstance(ref, str) else None
    elif isinstance(api_id, str):
        name = api_id
    resource = resources.get(name) if name else None
    if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::HttpApi":
        return {}
    auth = resolver.resolve((resource.get("Properties") or {}).get("Auth") or {})
    return auth if isinstance(auth, dict) else {}


def _target_function(expr: Any) -> str | None:
    if not isinstance(expr, dict):
        return None
    if "Fn::GetAtt" in expr:
        target = expr["Fn::GetAtt"]
        return str(target[0]) if isinstance(target, list) and target else None
    if "Ref" in expr:
        return str(expr["Ref"])
    return None


def _json_input(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    return value
