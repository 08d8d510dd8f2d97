"""Helpers shared by unit tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import azure.functions as func

ROOT = Path(__file__).resolve().parents[2]


def fresh_function_app() -> func.FunctionApp:
    """function_app loaded anew, as devhost reads it: get_functions() may be called once per
    app object, so each test that reads the trigger metadata takes its own."""
    spec = importlib.util.spec_from_file_location("function_app_for_tests", ROOT / "function_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: func.FunctionApp = module.app
    return app
