"""The error hierarchy as promised: one base, every class exported from the package, codes in
one spelling except the original coordinator's, which are kept as written."""

from __future__ import annotations

import inspect
import re

import cross_instance
from cross_instance import errors

KEPT = {"RATE_LIMIT_EXCEEDED", "workflow_owned_by_other"}


def defined() -> list[type[BaseException]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, BaseException) and c.__module__ == errors.__name__]


def test_every_error_is_one_hierarchy_and_exported_from_the_package():
    classes = defined()
    assert len(classes) >= 19
    for cls in classes:
        assert issubclass(cls, cross_instance.CrossInstanceError), cls
        assert getattr(cross_instance, cls.__name__) is cls, f"{cls.__name__} not exported"
        assert cls.__name__ in cross_instance.__all__


def test_codes_are_unique_and_snake_case_except_the_originals():
    codes = [cls.code for cls in defined()]
    assert len(set(codes)) == len(codes), codes
    for code in codes:
        assert code in KEPT or re.fullmatch(r"[a-z]+(_[a-z]+)*", code), code


def test_cancelled_is_one_class_under_every_name_it_had():
    from cross_instance import acquire
    from cross_instance.runtime import acquire as runtime_acquire

    assert acquire.Cancelled is runtime_acquire.Cancelled is cross_instance.Cancelled
    assert cross_instance.Cancelled.code == "cancelled"
