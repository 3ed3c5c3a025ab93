"""Declaring the node's parameters on an rclpy node: every spec of
:data:`~ssnet_ros.ros.parameters.PARAMETERS` with its descriptor, a typed value for every
declared parameter (never "not set"), the read-only parameters derived from the checkpoint, and
one warning for overrides the node does not have. The values themselves are validated by
:func:`~ssnet_ros.ros.parameters.validate`."""

from __future__ import annotations

import difflib
import re
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, \
    ParameterException
from rclpy.parameter import Parameter

from ..core.checkpoint import read_card
from ..core.segmenter import Segmenter, resolve_weights
from ..errors import SSNetError
from .parameters import DERIVED_PARAMETERS, PARAMETERS, ParamSpec

_DERIVED_TYPES = {"class_names": Parameter.Type.STRING_ARRAY,
                  "palette": Parameter.Type.INTEGER_ARRAY,
                  "drivable_ids": Parameter.Type.INTEGER_ARRAY}


def reason(exc: ParameterException) -> str:
    """rclpy's message without its trailing ': <parameter name>'."""
    return str(exc).rsplit(": ", 1)[0]


def checkpoint_drivable(weights: str) -> list[str]:
    """The drivable class names of the checkpoint ``weights`` names ([] if unreadable:
    loading it later reports why)."""
    try:
        return list(read_card(resolve_weights(weights or None)).drivable_classes)
    except SSNetError:
        return []


def _declare_one(node: Any, spec: ParamSpec, default: Any, writable: bool) -> Any:
    """Declare ``spec``; rclpy's refusals become one SSNetError sentence."""
    try:
        return node.declare_parameter(spec.name, default, spec.descriptor(writable))
    except InvalidParameterTypeException as exc:
        raise SSNetError(f"parameter {spec.name} must be of type "
                         f"{spec.type.name.lower()} ({reason(exc)})") from None
    except InvalidParameterValueException as exc:
        if spec.range is None:
            raise SSNetError(f"parameter {spec.name}: {reason(exc)}") from None
        given = re.search(r"value \((.*?)\) for parameter", str(exc))
        raise SSNetError(f"parameter {spec.name} is {given[1] if given else 'invalid'}; "
                         f"it must be within {spec.range[0]}..{spec.range[1]}") from None
    except ParameterException as exc:
        raise SSNetError(f"parameter {spec.name}: {reason(exc)}") from None


def declare_all(node: Any, writable: bool) -> dict[str, Any]:
    """Declare every user parameter (startup ones read-only unless ``writable``); return the
    values (name -> value). drivable_classes defaults to the checkpoint's own names."""
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        default = spec.type if spec.default == [] else spec.default  # rclpy: typed empty
        if spec.name == "drivable_classes":  # hold the effective names, never "not set"
            default = checkpoint_drivable(values["weights"]) or default
        param = _declare_one(node, spec, default, writable)
        if param.value is None:  # an empty list: give it a typed empty value
            hold_empty(node, spec.name, spec.type)
        values[spec.name] = [] if param.value is None else param.value
    return values


def hold(node: Any, param: Parameter) -> None:
    """Set a (read-only) parameter's value the node derives itself."""
    node._parameters[param.name] = param


def hold_empty(node: Any, name: str, kind: Parameter.Type) -> None:
    """Give a declared array parameter without value the typed empty value.

    rclpy declares ``[]`` defaults as "not set", and answers a GetParameters request that
    names one with no values at all (``ros2 param dump`` gets nothing). rclpy has no public
    way to give a read-only parameter a typed empty array, so it is set in its table."""
    hold(node, Parameter(name, kind, []))


def current_values(node: Any) -> dict[str, Any]:
    """The user-settable parameters' current values (name -> value)."""
    values = {}
    for spec in PARAMETERS:
        value = node.get_parameter(spec.name).value
        values[spec.name] = [] if value is None else value
    return values


def declare_derived(node: Any, seg: Segmenter, again: bool) -> None:
    """Declare (or, ``again``, update) class_names, palette and drivable_ids from ``seg``."""
    values = {"class_names": list(seg.class_names),
              "palette": [int(v) for colour in seg.palette for v in colour],
              "drivable_ids": [int(i) for i in seg.drivable_ids]}
    for name, description in DERIVED_PARAMETERS.items():
        kind = _DERIVED_TYPES[name]
        if again:  # configured again (lifecycle): new values
            hold(node, Parameter(name, kind, values[name]))
            continue
        descriptor = ParameterDescriptor(name=name, type=kind.value, read_only=True,
                                         description=description)
        node.declare_parameter(name, values[name] or kind, descriptor, ignore_override=True)
        if not values[name]:
            hold_empty(node, name, kind)


def warn_unknown_overrides(node: Any) -> None:
    """One warning naming overrides of parameters this node does not declare."""
    declared = [spec.name for spec in PARAMETERS] + list(DERIVED_PARAMETERS)
    unknown = sorted(n for n in node._parameter_overrides  # rclpy declares some itself
                     if n not in declared and not node.has_parameter(n))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, declared, n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        node.get_logger().warning(
            f"ignoring parameters this node does not have: {', '.join(hints)}")
